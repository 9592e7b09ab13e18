"""The cluster benchmark's simulator and metrics, on hand-made traces whose answers are known.

Five jobs on one host of 8 GPUs. A takes 6 GPUs for 100 s; B, the big one,
needs 7 and must wait for A; C, D and E are small. FIFO makes everyone wait
behind B; first fit lets D jump ahead and so delays B until D ends; EASY
backfill lets C and E run before B's reservation (at 100 s, when A ends) but
not D, which would outlast it.
"""

from __future__ import annotations

import pytest

from benchmarks.cluster import trace
from benchmarks.cluster.metrics import jain, max_min_fair, measure
from benchmarks.cluster.schedule import Cluster, Placement, Schedule
from benchmarks.cluster.simulate import simulate
from benchmarks.cluster.trace import TraceJob

ONE_HOST = Cluster(hosts=1)
FIVE = [
    TraceJob(0, 0, "alpha", 6, 100),  # A
    TraceJob(1, 1, "beta", 7, 50),  # B
    TraceJob(2, 2, "alpha", 2, 50),  # C
    TraceJob(3, 3, "beta", 2, 200),  # D
    TraceJob(4, 4, "gamma", 1, 10),  # E
]


def starts(schedule: Schedule) -> list[float]:
    placed = schedule.placement_of()
    return [placed[j.index].start_s for j in schedule.jobs]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("fifo", [0, 100, 150, 150, 150]),  # all behind B; C, D, E start when B ends
        ("first-fit", [0, 252, 2, 52, 100]),  # D takes the GPUs B waits for
        ("easy", [0, 100, 2, 150, 52]),  # C and E end before B's reservation; D may not
        ("jobqueue", [0, 252, 2, 52, 100]),  # the claim rule skips ahead like first fit
    ],
)
def test_each_policy_starts_the_five_jobs_when_it_should(policy, expected):
    assert starts(simulate(FIVE, ONE_HOST, policy, poll_trace_s=1000)) == expected


def test_easy_waits_less_than_fifo_and_does_not_delay_the_big_job():
    fifo, first_fit, easy = (measure(simulate(FIVE, ONE_HOST, p)) for p in
                             ("fifo", "first-fit", "easy"))  # fmt: skip
    assert fifo.waits.mean == pytest.approx((0 + 99 + 148 + 147 + 146) / 5)
    assert first_fit.waits.mean == pytest.approx((0 + 251 + 0 + 49 + 96) / 5)
    assert easy.waits.mean == pytest.approx((0 + 99 + 0 + 147 + 48) / 5)
    assert easy.waits_by_gpus[7].max == fifo.waits_by_gpus[7].max == 99


def test_idle_while_fitting_counts_free_gpus_a_queued_job_could_use():
    fifo = measure(simulate(FIVE, ONE_HOST, "fifo"))
    # From 2 s to 100 s two GPUs are free while C (2 GPUs) and later E (1) wait behind B;
    # from 100 s to 150 s one is free while E waits.
    assert fifo.idle_fitting_gpu_s == pytest.approx(2 * 98 + 1 * 50)
    # A reservation's GPUs are not idle "while fitting": EASY backfills the rest.
    assert measure(simulate(FIVE, ONE_HOST, "easy")).idle_fitting_gpu_s == pytest.approx(0)


def test_utilisation_while_waiting_and_makespan_of_a_known_schedule():
    jobs = [TraceJob(0, 0, "a", 8, 100), TraceJob(1, 0, "b", 4, 100)]
    one_after_the_other = [Placement(0, 0, 0, 100), Placement(1, 0, 100, 200)]
    schedule = Schedule("hand", ONE_HOST, jobs, one_after_the_other)
    m = measure(schedule)
    # Job 1 waits for the first 100 s, when all 8 GPUs are busy.
    assert m.utilisation_waiting == pytest.approx(1.0)
    assert m.utilisation_run == pytest.approx((800 + 400) / (8 * 200))
    assert m.makespan_s == 200
    assert m.makespan_bound_s == pytest.approx(max(1200 / 8, 100))
    assert m.waits.max == 100 and m.waits.p50 == 50


def test_team_shares_are_measured_against_max_min_fair_shares():
    # Both teams want the whole host while b waits; a holds it all: a gets 200%, b 0%.
    jobs = [TraceJob(0, 0, "a", 8, 100), TraceJob(1, 0, "b", 8, 100)]
    one_after_the_other = [Placement(0, 0, 0, 100), Placement(1, 0, 100, 200)]
    schedule = Schedule("hand", ONE_HOST, jobs, one_after_the_other)
    m = measure(schedule)
    shares = {t.team: t.ratio for t in m.teams}
    assert shares == {"a": pytest.approx(2.0), "b": pytest.approx(0.0)}
    assert m.largest_shortfall == pytest.approx(1.0)
    assert m.jain == pytest.approx(0.5)


def test_max_min_fairness_and_jains_index():
    assert max_min_fair({"a": 10, "b": 50, "c": 50}, 90) == {"a": 10, "b": 40, "c": 40}
    assert max_min_fair({"a": 10, "b": 20}, 100) == {"a": 10, "b": 20}
    assert jain([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert jain([1.0, 0.0]) == pytest.approx(0.5)


def test_a_forced_job_goes_to_the_head_of_every_queue():
    jobs = [*FIVE[:4], TraceJob(4, 4, "gamma", 1, 10, forced=True)]
    for policy in ("fifo", "easy", "jobqueue"):
        schedule = simulate(jobs, ONE_HOST, policy)
        placed = schedule.placement_of()
        # E is forced at 4 s: it starts as soon as a GPU is free, ahead of B.
        assert placed[4].start_s <= placed[1].start_s, policy


def test_trace_windows_are_rebased_capped_and_stretched_to_a_load(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text(
        "submit_s,team,gpus,duration_s,job_type\n"
        "0,a,1,100,x\n50,b,8,10000,y\n100,a,2,100,z\n300,c,4,100,w\n"
    )
    jobs = trace.read_trace(path)
    assert [(j.team, j.gpus) for j in jobs] == [("a", 1), ("b", 8), ("a", 2), ("c", 4)]
    window = trace.window(jobs, start_s=50, length_s=100, max_duration_s=1000)
    assert [(j.index, j.submit_s, j.duration_s) for j in window] == [(0, 0, 1000), (1, 50, 100)]
    # 8,200 GPU-seconds over 50 s of arrivals on 8 GPUs is a load of 20.5.
    assert trace.offered_load(window, 8) == pytest.approx(8200 / (8 * 50))
    stretched = trace.stretch_to_load(window, 8, 1.0)
    assert trace.offered_load(stretched, 8) == pytest.approx(1.0)
    assert [j.duration_s for j in stretched] == [1000, 100]


def test_synthetic_traces_are_reproducible_and_near_their_load():
    one = trace.synthetic(400, gpus_total=64, load=1.0, seed=3)
    assert one == trace.synthetic(400, gpus_total=64, load=1.0, seed=3)
    assert trace.offered_load(one, 64) == pytest.approx(1.0, rel=0.1)
    assert {j.gpus for j in one} <= {1, 2, 4, 8}
