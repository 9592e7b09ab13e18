"""Where the job commands act: the database itself, or a jobqueue API.

``jobqueue --api URL`` (or ``JOBQUEUE_API_URL``) sends the job and sweep commands to the
REST API through :class:`jobqueue.client.Client` with ``--token`` / ``JOBQUEUE_API_TOKEN``,
so that a laptop needs no database access; without it they use ``DATABASE_URL``. Both
answer in the API's JSON shapes, so each command prints the same either way.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from jobqueue.specs import JobSpec
from jobqueue.sweep_specs import SweepPatch, SweepSpec

Json = dict[str, Any]


class Backend(Protocol):
    def submit(self, spec: JobSpec) -> Json: ...
    def jobs(self, *, statuses: list[str], pool: str | None, team: str | None,
             limit: int) -> list[Json]: ...  # fmt: skip
    def get(self, job_id: UUID) -> Json: ...
    def logs(self, job_id: UUID, *, after: int) -> list[str]: ...
    def act(self, job_id: UUID, action: str, **options: Any) -> Json: ...
    def teams(self) -> list[Json]: ...
    def submit_sweep(self, spec: SweepSpec) -> Json: ...
    def sweeps(self, *, team: str | None, limit: int) -> list[Json]: ...
    def sweep(self, sweep_id: UUID) -> Json: ...
    def sweep_jobs(self, sweep_id: UUID, *, sort: str, descending: bool, metric: str | None,
                   limit: int) -> list[Json]: ...  # fmt: skip
    def act_on_sweep(self, sweep_id: UUID, action: str, **options: Any) -> Json: ...
    def patch_sweep(self, sweep_id: UUID, patch: SweepPatch) -> Json: ...


def json_default(o: Any) -> Any:
    """Times and ids as the API writes them."""
    if isinstance(o, datetime):
        return o.isoformat()
    if isinstance(o, UUID):
        return str(o)
    raise TypeError(type(o).__name__)


def _plain(value: Any) -> Any:
    """A core record's public form as the API sends it (times and ids as text)."""
    return json.loads(json.dumps(value, default=json_default))


class Local:
    """The commands on the database (``DATABASE_URL``), as ``actor``."""

    def __init__(self, queue: Any, actor: str):
        self.queue = queue
        self.actor = actor

    def submit(self, spec: JobSpec) -> Json:
        job, _ = self.queue.submit(spec, actor=self.actor)
        return _plain(job.public())

    def jobs(self, *, statuses: list[str], pool: str | None, team: str | None,
             limit: int) -> list[Json]:  # fmt: skip
        found, _ = self.queue.list_jobs(statuses=statuses or None, pool=pool, team=team,
                                        limit=limit)  # fmt: skip
        return [_plain(job.public()) for job in found]

    def get(self, job_id: UUID) -> Json:
        return _plain(self.queue.get(job_id).public())

    def logs(self, job_id: UUID, *, after: int) -> list[str]:
        lines, _ = self.queue.logs(job_id, after=after, limit=100_000)
        return [line.text for line in lines]

    def act(self, job_id: UUID, action: str, **options: Any) -> Json:
        method = getattr(self.queue, action.replace("-", "_"))
        return _plain(method(job_id, actor=self.actor, **options).public())

    def teams(self) -> list[Json]:
        return [_plain(team.public()) for team in self.queue.teams()]

    def submit_sweep(self, spec: SweepSpec) -> Json:
        done = self.queue.submit_sweep(spec, actor=self.actor)
        items = [{"index": i.index, "id": i.id, "created": i.created} for i in done.items]
        return _plain({"sweep": done.sweep.public(), "jobs": items, "created": done.created})

    def sweeps(self, *, team: str | None, limit: int) -> list[Json]:
        found, _ = self.queue.sweeps(team=team, limit=limit)
        return [_plain(s.public()) for s in found]

    def sweep(self, sweep_id: UUID) -> Json:
        return _plain(self.queue.sweep(sweep_id).public())

    def sweep_jobs(self, sweep_id: UUID, *, sort: str, descending: bool, metric: str | None,
                   limit: int) -> list[Json]:  # fmt: skip
        rows = self.queue.sweep_jobs(sweep_id, sort=sort, descending=descending, metric=metric,
                                     limit=limit)  # fmt: skip
        return [_plain(row.public()) for row in rows]

    def act_on_sweep(self, sweep_id: UUID, action: str, **options: Any) -> Json:
        from jobqueue.states import Action

        outcome = self.queue.act_on_sweep(sweep_id, Action(action), actor=self.actor, **options)
        return _outcome(outcome)

    def patch_sweep(self, sweep_id: UUID, patch: SweepPatch) -> Json:
        return _outcome(self.queue.patch_sweep(sweep_id, patch, actor=self.actor))


def _outcome(outcome: Any) -> Json:
    return _plain({"sweep": outcome.sweep.public(), "changed": outcome.changed,
                   "requested": outcome.requested, "unchanged": outcome.unchanged})  # fmt: skip


class Remote:
    """The commands through a jobqueue API (the token's name is the actor there)."""

    def __init__(self, client: Any):
        self.client = client

    def submit(self, spec: JobSpec) -> Json:
        return self.client.submit(spec).model_dump(mode="json")

    def jobs(self, *, statuses: list[str], pool: str | None, team: str | None,
             limit: int) -> list[Json]:  # fmt: skip
        found = self.client.jobs(status=statuses or None, pool=pool, team=team,
                                 page_size=limit)  # fmt: skip
        return [job.model_dump(mode="json") for _, job in zip(range(limit), found, strict=False)]

    def get(self, job_id: UUID) -> Json:
        return self.client.get(job_id).model_dump(mode="json")

    def logs(self, job_id: UUID, *, after: int) -> list[str]:
        texts: list[str] = []
        while True:
            page = self.client.logs(job_id, after=after)
            texts.extend(line.text for line in page.lines)
            if not page.lines:
                return texts
            after = page.next

    def act(self, job_id: UUID, action: str, **options: Any) -> Json:
        method = getattr(self.client, action.replace("-", "_"))
        return method(job_id, **options).model_dump(mode="json")

    def teams(self) -> list[Json]:
        return [team.model_dump(mode="json") for team in self.client.teams()]

    def submit_sweep(self, spec: SweepSpec) -> Json:
        done = self.client.submit_sweep(spec).model_dump(mode="json")
        # The API says "created" by its status code (201/200): any job made means new.
        return {**done, "created": any(item["created"] for item in done["jobs"])}

    def sweeps(self, *, team: str | None, limit: int) -> list[Json]:
        found = self.client.sweeps(team=team, page_size=limit)
        return [s.model_dump(mode="json") for _, s in zip(range(limit), found, strict=False)]

    def sweep(self, sweep_id: UUID) -> Json:
        return self.client.sweep(sweep_id).model_dump(mode="json")

    def sweep_jobs(self, sweep_id: UUID, *, sort: str, descending: bool, metric: str | None,
                   limit: int) -> list[Json]:  # fmt: skip
        rows = self.client.sweep_jobs(sweep_id, sort=sort, descending=descending, metric=metric,
                                      limit=limit)  # fmt: skip
        return [row.model_dump(mode="json") for row in rows]

    def act_on_sweep(self, sweep_id: UUID, action: str, **options: Any) -> Json:
        return self.client.act_on_sweep(sweep_id, action, **options).model_dump(mode="json")

    def patch_sweep(self, sweep_id: UUID, patch: SweepPatch) -> Json:
        changes = patch.model_dump(exclude_unset=True)
        return self.client.patch_sweep(sweep_id, **changes).model_dump(mode="json")
