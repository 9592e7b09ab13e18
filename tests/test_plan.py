"""The scheduling pass's rules without a database: fair-share standings, the plan's
reservations and expected starts, and the claim's backfill rule around a reservation."""

from __future__ import annotations

import itertools
from uuid import uuid4

import pytest

from jobqueue.fit import Candidate, HostReservation, choose
from jobqueue.plan import INFINITY, Host, Running, Waiting, choose_victims, plan_pool
from jobqueue.planner import standings_of

NOW = 1_000_000.0
HOUR = 3600.0


def host(name: str, *running: tuple[int, float], total: int = 8) -> Host:
    return Host(name, total, frozenset({"train"}), tuple(running))


_queued = itertools.count()


def waiting(gpus: int, limit_s: float | None = HOUR, *, forced=False, team="a", kind="train"):
    """A queued job, queued after every one made before it."""
    return Waiting(uuid4(), gpus, kind, forced, limit_s, team, queued_at=NOW - 1e6 + next(_queued))


# -- fair-share standings -----------------------------------------------------------------


def test_a_team_that_used_less_than_its_share_gets_the_higher_factor():
    standings = {s.team: s for s in standings_of({"a": 300.0, "b": 100.0}, {"a": 1, "b": 1})}
    assert standings["a"].usage_fraction == pytest.approx(0.75)
    assert standings["b"].share_fraction == pytest.approx(0.5)
    assert standings["a"].factor == pytest.approx(2 ** (-1.5))
    assert standings["b"].factor == pytest.approx(2 ** (-0.5))
    assert standings["b"].factor > standings["a"].factor


def test_shares_weight_the_factor():
    # a used twice what b used, but a is owed twice as much: they stand level.
    standings = {s.team: s for s in standings_of({"a": 200.0, "b": 100.0}, {"a": 2, "b": 1})}
    assert standings["a"].factor == pytest.approx(standings["b"].factor)


def test_nobody_used_anything_every_factor_is_one():
    assert [s.factor for s in standings_of({"a": 0.0, "b": 0.0}, {"a": 1, "b": 3})] == [1.0, 1.0]


# -- the plan -------------------------------------------------------------------------


def test_jobs_that_fit_now_are_expected_now_and_reserve_nothing():
    jobs = [waiting(4), waiting(4)]
    plan = plan_pool([host("h1")], jobs, now=NOW)
    assert plan.reservations == []
    assert [plan.expected_start[j.id] for j in jobs] == [NOW, NOW]


def test_the_first_job_that_does_not_fit_reserves_the_host_that_frees_up_first():
    big = waiting(8)
    hosts = [host("h1", (4, NOW + 3 * HOUR)), host("h2", (2, NOW + HOUR), (2, NOW + 2 * HOUR))]
    plan = plan_pool(hosts, [big], now=NOW)
    [r] = plan.reservations
    assert (r.job_id, r.worker_name, r.gpus) == (big.id, "h2", 8)
    assert r.starts_at == NOW + 2 * HOUR
    assert r.extra_gpus == 0
    assert plan.expected_start[big.id] == NOW + 2 * HOUR


def test_the_reservation_counts_the_gpus_left_over_at_its_start():
    six = waiting(6)
    plan = plan_pool([host("h1", (8, NOW + HOUR))], [six], now=NOW)
    assert plan.reservations[0].extra_gpus == 2


def test_later_jobs_are_planned_around_the_reservation():
    big, short, long_ = waiting(8), waiting(2, HOUR), waiting(2, 5 * HOUR)
    hosts = [host("h1", (6, NOW + 2 * HOUR))]
    plan = plan_pool(hosts, [big, short, long_], now=NOW)
    assert plan.expected_start[big.id] == NOW + 2 * HOUR
    assert plan.expected_start[short.id] == NOW  # ends before the big job starts
    # The long one would delay it: it goes after the big job's own limit.
    assert plan.expected_start[long_.id] == NOW + 3 * HOUR
    assert [r.job_id for r in plan.reservations] == [big.id]


def test_only_the_first_waiting_job_reserves_but_every_forced_one_does():
    first, second = waiting(8), waiting(8)
    forced = waiting(8, forced=True)
    hosts = [host("h1", (8, NOW + HOUR)), host("h2", (8, NOW + 2 * HOUR)),
             host("h3", (8, NOW + 3 * HOUR))]  # fmt: skip
    plan = plan_pool(hosts, [forced, first, second], now=NOW)
    assert [(r.job_id, r.worker_name) for r in plan.reservations] == [
        (forced.id, "h1"),
        (first.id, "h2"),
    ]
    # h1 is free again once the forced job's limit ends.
    assert plan.expected_start[second.id] == NOW + 2 * HOUR


def test_running_jobs_without_limits_give_no_time_but_the_host_is_still_reserved():
    big = waiting(8)
    plan = plan_pool([host("h1", (4, INFINITY)), host("h2", (6, INFINITY))], [big], now=NOW)
    [r] = plan.reservations
    assert r.starts_at is None and r.worker_name == "h1"  # the most free GPUs now
    assert plan.expected_start[big.id] is None


def test_a_job_no_host_can_run_is_neither_planned_nor_reserved():
    odd, huge = waiting(1, kind="other"), waiting(16)
    plan = plan_pool([host("h1", (8, NOW + HOUR))], [odd, huge], now=NOW)
    assert plan.reservations == []
    assert plan.expected_start == {odd.id: None, huge.id: None}


def test_a_job_over_its_teams_quota_reserves_nothing():
    over, other = waiting(8, team="nlp"), waiting(8, team="cv")
    plan = plan_pool([host("h1", (8, NOW + HOUR))], [over, other], now=NOW, quota_left={"nlp": 4})
    assert plan.expected_start[over.id] is None
    assert [r.job_id for r in plan.reservations] == [other.id]


def test_a_job_without_a_limit_holds_its_gpus_for_ever_in_the_plan():
    endless, after = waiting(8, None), waiting(8)
    plan = plan_pool([host("h1")], [endless, after], now=NOW)
    assert plan.expected_start[endless.id] == NOW
    assert plan.expected_start[after.id] is None


# -- backfill at claim time -----------------------------------------------------------------


def claim(candidates, *, free=4, reservation=None, elsewhere=(), now=NOW):
    chosen = choose(
        candidates,
        free_gpu_ids=list(range(free)),
        total_gpus=8,
        slots=8,
        reservation=reservation,
        reserved_elsewhere=set(elsewhere),
        now=now,
    )
    return [job_id for job_id, _ in chosen]


def test_a_reserved_host_starts_only_jobs_that_end_before_the_reservation():
    big = uuid4()
    held = HostReservation(big, NOW + 2 * HOUR, 0)
    short = Candidate(uuid4(), 2, False, limit_s=HOUR)
    too_long = Candidate(uuid4(), 2, False, limit_s=3 * HOUR)
    no_limit = Candidate(uuid4(), 1, False)
    assert claim([too_long, no_limit, short], reservation=held) == [short.id]


def test_jobs_may_use_the_reservations_extra_gpus_whatever_their_limit():
    held = HostReservation(uuid4(), NOW + HOUR, 2)
    a, b = Candidate(uuid4(), 1, False), Candidate(uuid4(), 2, False)
    c = Candidate(uuid4(), 1, False, limit_s=10 * HOUR)
    assert claim([a, b, c], reservation=held) == [a.id, c.id]  # 1 + 1 of the 2 extra


def test_the_reserved_job_itself_starts_when_it_fits():
    big = Candidate(uuid4(), 4, False)
    held = HostReservation(big.id, NOW, 0)
    assert claim([big], free=4, reservation=held) == [big.id]


def test_a_reservation_of_unknown_start_lets_nothing_but_extra_gpus_backfill():
    held = HostReservation(uuid4(), None, 0)
    assert claim([Candidate(uuid4(), 1, False, limit_s=60)], reservation=held) == []


def test_a_forced_job_reserved_elsewhere_does_not_hold_this_host_back():
    forced = Candidate(uuid4(), 8, True)
    small = Candidate(uuid4(), 1, False)
    assert claim([forced, small], elsewhere=[forced.id]) == [small.id]
    # Where it fits, it starts: the GPUs it was waiting for elsewhere freed up here first.
    assert claim([forced, small], free=8, elsewhere=[forced.id]) == [forced.id]
    # Not planned yet: it holds back this host's GPUs, as force-start promises.
    assert claim([forced, small]) == []


def test_zero_gpu_jobs_start_around_any_reservation():
    held = HostReservation(uuid4(), NOW + HOUR, 0)
    cpu = Candidate(uuid4(), 0, False)
    assert claim([cpu], reservation=held) == [cpu.id]


# -- preemption ---------------------------------------------------------------------------


def running(name: str, gpus: int, *, team="b", priority=50, ran=HOUR, lost=HOUR / 2, **kw):
    flags = {"forced": False, "preemptible": True, "stopping": False, **kw}
    return Running(uuid4(), name, gpus, team, priority, flags["forced"], flags["preemptible"],
                   NOW - ran, NOW - lost, flags["stopping"])  # fmt: skip


def victims(preemptor, hosts, jobs, *, min_runtime=600.0, above=("b",)):
    return choose_victims(preemptor, hosts, jobs, now=NOW, min_runtime_s=min_runtime,
                          above_share=set(above))  # fmt: skip


def test_preemption_takes_the_fewest_gpus_then_the_least_work_lost():
    big, small_old, small_new = running("h1", 4), running("h1", 2, lost=HOUR), running("h1", 2)
    hosts = [host("h1", (4, INFINITY), (2, INFINITY), (2, INFINITY))]
    owed = waiting(2, forced=True, team="a")
    assert victims(owed, hosts, [big, small_old, small_new]) == ("h1", [small_new.id])


def test_preemption_picks_the_host_that_loses_fewest_gpus_then_least_work():
    four = running("h1", 4)
    two_a, two_b = running("h2", 2), running("h2", 2)
    hosts = [host("h1", (4, INFINITY), total=4), host("h2", (2, INFINITY), (2, INFINITY), total=4)]
    for_two = waiting(2, forced=True, team="a")
    for_four = waiting(4, forced=True, team="a")
    assert victims(for_two, [hosts[0], hosts[1]], [four, two_a, two_b])[0] == "h2"
    # Four GPUs either way: h1 loses half an hour of work, h2 an hour.
    assert victims(for_four, hosts, [four, two_a, two_b]) == ("h1", [four.id])


def test_jobs_that_ran_less_than_the_minimum_are_never_preempted():
    young = running("h1", 8, ran=60)
    owed = waiting(8, forced=True, team="a")
    assert victims(owed, [host("h1", (8, INFINITY))], [young]) is None
    assert victims(owed, [host("h1", (8, INFINITY))], [young], min_runtime=30) == (
        "h1",
        [young.id],
    )


def test_only_preemptible_jobs_of_teams_above_share_or_lower_priority_are_victims():
    hosts = [host("h1", (2, INFINITY), (2, INFINITY), (2, INFINITY), (2, INFINITY))]
    owed = Waiting(uuid4(), 2, "train", True, HOUR, "a", priority=50)
    keep = [
        running("h1", 2, team="c"),  # below or at share, same priority
        running("h1", 2, team="b", preemptible=False),
        running("h1", 2, team="b", forced=True),
        running("h1", 2, team="b", stopping=True),
    ]
    assert victims(owed, hosts, keep) is None
    lower = running("h1", 2, team="c", priority=10)
    assert victims(owed, hosts, [*keep[1:], lower]) == ("h1", [lower.id])


def test_nothing_is_preempted_for_a_job_that_fits_already():
    owed = waiting(2, forced=True, team="a")
    assert victims(owed, [host("h1", (4, INFINITY))], [running("h1", 4)]) is None


def test_the_longest_waiting_job_is_protected_even_when_it_is_not_first_in_line():
    # Fair share put a busy team's old big job behind newer jobs of other teams.
    first = Waiting(uuid4(), 8, "train", False, HOUR, "a", queued_at=NOW - 10)
    old_big = Waiting(uuid4(), 8, "train", False, HOUR, "busy", queued_at=NOW - 3600)
    hosts = [host("h1", (8, NOW + HOUR)), host("h2", (8, NOW + 2 * HOUR))]
    plan = plan_pool(hosts, [first, old_big], now=NOW)
    assert [(r.job_id, r.worker_name) for r in plan.reservations] == [
        (first.id, "h1"),
        (old_big.id, "h2"),
    ]
    assert plan.expected_host == {first.id: "h1", old_big.id: "h2"}


def test_a_job_the_pass_planned_to_start_now_here_passes_the_reservation():
    # The claim's clock is later than the pass's: by its own now + limit the job would end
    # a moment after the reservation starts, but the pass placed it so.
    held = HostReservation(uuid4(), NOW + HOUR, 0)
    planned = Candidate(uuid4(), 2, False, limit_s=HOUR, planned_now=True)
    unplanned = Candidate(uuid4(), 2, False, limit_s=HOUR)
    assert claim([unplanned, planned], reservation=held, now=NOW + 0.01) == [planned.id]
