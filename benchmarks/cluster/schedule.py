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
