"""Report progress, metrics and checkpoints from a Python job: ``from jobqueue import report``.

Each call prints one ``::jobqueue:: {json}`` line on stdout, which the worker
reads (SPEC §4). Any language can print the same lines.

    from jobqueue import report
    report.progress(0.42, step=420, metrics={"loss": 1.93}, message="epoch 3")
    report.checkpoint("/shared/ckpt/run-1/step-420", step=420)
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

PREFIX = "::jobqueue:: "


def _emit(body: dict[str, Any]) -> None:
    line = PREFIX + json.dumps({k: v for k, v in body.items() if v is not None})
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def progress(
    fraction: float | None = None,
    *,
    step: int | None = None,
    metrics: dict[str, Any] | None = None,
    message: str | None = None,
) -> None:
    """How far the job is (0–1), with its step, metrics for the charts and a message."""
    _emit({"progress": fraction, "step": step, "metrics": metrics, "message": message})


def checkpoint(uri: str, *, step: int | None = None) -> None:
    """A checkpoint was written: a resumed run gets ``uri`` in ``JOBQUEUE_RESUME_FROM``."""
    _emit({"checkpoint": uri, "step": step})


def resume_from() -> str | None:
    """The checkpoint to resume from, or None to start from scratch."""
    return os.environ.get("JOBQUEUE_RESUME_FROM") or None


def checkpoint_dir() -> str | None:
    """Where this job should write its checkpoints."""
    return os.environ.get("JOBQUEUE_CHECKPOINT_DIR") or None


def config() -> dict[str, Any]:
    """The job's config, read from the file named by ``JOBQUEUE_CONFIG``."""
    path = os.environ.get("JOBQUEUE_CONFIG")
    if not path:
        return {}
    with open(path) as fh:
        return json.load(fh)
