"""jobqueue: a durable PostgreSQL job queue for ML training jobs on your own GPU hosts.

The core package: schema, state machine, queue operations and settings. The
REST API (``api``) and the worker daemon (``worker``) are built on it.
"""

from jobqueue.errors import (
    IdempotencyConflict,
    InvalidTransition,
    JobNotFound,
    JobqueueError,
    LeaseLost,
    SchemaNotAtHead,
)
from jobqueue.states import Action, JobStatus, TerminationReason

__version__ = "0.1.0"

__all__ = [
    "Action",
    "IdempotencyConflict",
    "InvalidTransition",
    "JobNotFound",
    "JobStatus",
    "JobqueueError",
    "LeaseLost",
    "SchemaNotAtHead",
    "TerminationReason",
]
