"""The cluster benchmark's simulator and metrics, on hand-made traces whose answers are known.

Five jobs on one host of 8 GPUs, each with a time limit equal to its run time (exact
estimates). A takes 6 GPUs for 100 s; B, the big one, needs 7 and must wait for A; C,
D and E are small. FIFO makes everyone wait behind B; first fit lets D jump ahead and
so delays B until D ends; EASY backfill lets C and E run before B's reservation (at
100 s, when A ends) but not D, which would outlast it; jobqueue's scheduling pass
makes the same reservation, and its claim honours it.
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
    TraceJob(0, 0, "alpha", 6, 100, limit_s=100),  # A
    TraceJob(1, 1, "beta", 7, 50, limit_s=50),  # B
    TraceJob(2, 2, "alpha", 2, 50, limit_s=50),  # C
    TraceJob(3, 3, "beta", 2, 200, limit_s=200),  # D
    TraceJob(4, 4, "gamma", 1, 10, limit_s=10),  # E
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
        ("jobqueue", [0, 100, 2, 150, 52]),  # the pass reserves for B as EASY does
    ],
)
def test_each_policy_starts_the_five_jobs_when_it_should(policy, expected):
    # The twin's claims read the pass's own clock here (claim_lag_s=0); see the next test.
    schedule = simulate(FIVE, ONE_HOST, policy, poll_trace_s=1000, claim_lag_s=0)
    assert starts(schedule) == expected


def test_a_claim_after_the_pass_starts_the_job_the_pass_planned_to_start_now():
    # At 100 s the pass plans B now and reserves for D at B's end by its limit (150 s); a
    # claim one trace second later finds 101 + 50 > 150 and skips B.
    schedule = simulate(FIVE, ONE_HOST, "jobqueue", poll_trace_s=1000, claim_lag_s=1.0)
    assert starts(schedule) == [0, 100, 2, 150, 52]


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


def test_easy_backfills_by_the_limits_not_the_true_run_times():
    # A holds 6 of 8 GPUs until 100 s by its limit; B (8 GPUs) is reserved for then.
    # C would end by 52 s, but its limit says 202 s: Slurm cannot know, so C waits. D's
    # limit ends by 63 s: it backfills.
    jobs = [
        TraceJob(0, 0, "a", 6, 100, limit_s=100),
        TraceJob(1, 1, "b", 8, 50, limit_s=50),
        TraceJob(2, 2, "c", 2, 50, limit_s=200),
        TraceJob(3, 3, "d", 2, 50, limit_s=60),
    ]
    assert starts(simulate(jobs, ONE_HOST, "easy")) == [0, 100, 150, 3]
    # Without limits EASY plans with the true run times: C backfills (and D, behind it, no
    # longer ends in time).
    unlimited = [TraceJob(j.index, j.submit_s, j.team, j.gpus, j.duration_s) for j in jobs]
    assert starts(simulate(unlimited, ONE_HOST, "easy")) == [0, 100, 2, 150]


def _stream() -> list[TraceJob]:
    """Eight 1-GPU jobs fill the host, ending at 10, 20, …, 80 s; an 8-GPU job comes at 5 s;
    then a 1-GPU job every 10 s, each 100 s long, ready to take every GPU that frees."""
    first = [TraceJob(i, 0, "t", 1, 10.0 * (i + 1), limit_s=10.0 * (i + 1)) for i in range(8)]
    big = [TraceJob(8, 5, "t", 8, 100, limit_s=100)]
    stream = [TraceJob(9 + k, 10.0 * (k + 1), "t", 1, 100, limit_s=100) for k in range(20)]
    return first + big + stream


@pytest.mark.parametrize(
    "lag",
    [
        0.0,
        1.0,
    ],
)
def test_the_twin_protects_a_big_job_behind_a_stream_of_small_ones(lag):
    jobs = _stream()
    big_at = {
        policy: simulate(jobs, ONE_HOST, policy, claim_lag_s=lag).placement_of()[8].start_s
        for policy in ("first-fit", "easy", "jobqueue")
    }
    assert big_at["first-fit"] > 200  # the stream keeps taking the GPUs it waits for
    assert big_at["easy"] == 80
    assert big_at["jobqueue"] <= big_at["easy"]
