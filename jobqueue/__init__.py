"""jobqueue: a durable PostgreSQL job queue for ML training jobs on your own GPU hosts.

The core package: schema, state machine, queue operations and settings. The
REST API (``api``) and the worker daemon (``worker``) are built on it.

The in-process API, for scripts, notebooks and tests::

    import jobqueue

    queue = jobqueue.connect("postgresql://…")           # or DATABASE_URL
    job, created = queue.submit(jobqueue.JobSpec(name="a", kind="train"), actor="me")
    done = queue.submit_sweep(jobqueue.SweepSpec(name="s", job={"kind": "train"},
                                                 grid={"lr": [0.1, 0.01]}), actor="me")
    with jobqueue.PythonWorker(queue, {"train": train}, slots=4):   # runs callables
        ...

(``queue`` is a :class:`JobQueue`: every read and action of the REST API, and
``act_on_sweep``/``patch_sweep`` for whole sweeps.) Over HTTP instead:
:class:`jobqueue.client.Client`. Job code reports with ``from jobqueue import report``,
which imports none of the above.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobqueue.errors import (
    IdempotencyConflict,
    InvalidTransition,
    JobNotFound,
    JobqueueError,
    LeaseLost,
    SchemaNotAtHead,
)
from jobqueue.states import Action, JobStatus, TerminationReason

if TYPE_CHECKING:
    from jobqueue.inprocess import JobContext, PythonWorker, connect
    from jobqueue.outcomes import Exit
    from jobqueue.queue import JobQueue
    from jobqueue.specs import JobSpec
    from jobqueue.sweep_specs import SweepPatch, SweepSpec

__version__ = "0.1.0"

#: What the package exports lazily (name → module), so that ``from jobqueue import
#: report`` in a job's process loads no database driver.
_LAZY = {
    "connect": "jobqueue.inprocess",
    "PythonWorker": "jobqueue.inprocess",
    "JobContext": "jobqueue.inprocess",
    "Exit": "jobqueue.outcomes",
    "JobQueue": "jobqueue.queue",
    "JobSpec": "jobqueue.specs",
    "SweepSpec": "jobqueue.sweep_specs",
    "SweepPatch": "jobqueue.sweep_specs",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jobqueue' has no attribute {name!r}")


__all__ = [
    "Action",
    "Exit",
    "IdempotencyConflict",
    "InvalidTransition",
    "JobContext",
    "JobNotFound",
    "JobQueue",
    "JobSpec",
    "JobStatus",
    "JobqueueError",
    "LeaseLost",
    "PythonWorker",
    "SchemaNotAtHead",
    "SweepPatch",
    "SweepSpec",
    "TerminationReason",
    "connect",
]
