"""What a run produced: where and when each job ran, in trace seconds.

Both the simulator and the real replay produce a :class:`Schedule`, and every
metric is computed from it by the same code (:mod:`benchmarks.cluster.metrics`),
so a policy's figures and the real run's are comparable line by line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from benchmarks.cluster.trace import TraceJob


@dataclasses.dataclass(frozen=True)
class Cluster:
    hosts: int
    gpus_per_host: int = 8

    @property
    def gpus(self) -> int:
        return self.hosts * self.gpus_per_host


@dataclasses.dataclass(frozen=True)
class Placement:
    """One job's run: on which host, from when to when (trace seconds)."""

    job: int  # TraceJob.index
    host: int
    start_s: float
    end_s: float


@dataclasses.dataclass(frozen=True)
class Reservation:
    """GPUs a policy kept free on a host for a waiting job (EASY backfill's shadow)."""

    host: int
    gpus: int
    from_s: float
    until_s: float


class HeldGpus:
    """The GPUs the scheduling pass's reservations keep free, as closed :class:`Reservation`
    spans: each pass opens the spans it holds and ends the previous pass's."""

    def __init__(self) -> None:
        self.closed: list[Reservation] = []
        self._open: list[Reservation] = []

    def hold(self, host: int, gpus: int, now: float) -> None:
        if gpus:
            self._open.append(Reservation(host, gpus, now, float("inf")))

    def close(self, now: float) -> None:
        """End the open spans at ``now`` (the next pass recomputes them)."""
        for r in self._open:
            if now > r.from_s:
                self.closed.append(Reservation(r.host, r.gpus, r.from_s, now))
        self._open = []


@dataclasses.dataclass
class Schedule:
    policy: str
    cluster: Cluster
    jobs: Sequence[TraceJob]
    placements: list[Placement]
    reservations: list[Reservation] = dataclasses.field(default_factory=list)
    #: The real run only: (queue depth at the call, claim call in real milliseconds).
    claim_calls: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    #: The real run only: free-form facts (compression, overheads) for the notes.
    notes: list[str] = dataclasses.field(default_factory=list)

    def placement_of(self) -> dict[int, Placement]:
        return {p.job: p for p in self.placements}
