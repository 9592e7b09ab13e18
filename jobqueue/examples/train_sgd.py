"""A small real training job with no dependencies: linear regression by SGD.

It shows what a jobqueue job does: read its config from $JOBQUEUE_CONFIG,
report progress and loss, checkpoint every N steps into
$JOBQUEUE_CHECKPOINT_DIR, resume from $JOBQUEUE_RESUME_FROM, and on SIGTERM
checkpoint, report it and exit (the worker then pauses, cancels or hands the
job back).

Config keys: steps (200), lr (0.05), checkpoint_every (20), step_seconds
(0.02, to make the run last), features (8), seed (0), fail_at_step (none:
exit 1 at that step on the first attempt, to try retries).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

from jobqueue import report

stop_requested = False


def on_sigterm(signum, frame):
    global stop_requested
    stop_requested = True


def make_data(features: int, seed: int, n: int = 256):
    rng = random.Random(seed)
    true_w = [rng.uniform(-2, 2) for _ in range(features)]
    xs = [[rng.gauss(0, 1) for _ in range(features)] for _ in range(n)]
    ys = [sum(w * x for w, x in zip(true_w, row, strict=True)) + rng.gauss(0, 0.1) for row in xs]
    return xs, ys


def save_checkpoint(directory: Path, step: int, weights: list[float]) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{step:06d}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"step": step, "weights": weights}))
    tmp.replace(path)  # never a half-written checkpoint
    report.checkpoint(str(path), step=step)
    return str(path)


def main() -> int:
    signal.signal(signal.SIGTERM, on_sigterm)
    config = report.config()
    steps = int(config.get("steps", 200))
    lr = float(config.get("lr", 0.05))
    every = int(config.get("checkpoint_every", 20))
    step_seconds = float(config.get("step_seconds", 0.02))
    features = int(config.get("features", 8))
    fail_at = config.get("fail_at_step")
    attempt = int(os.environ.get("JOBQUEUE_ATTEMPT", "1"))
    checkpoints = Path(report.checkpoint_dir() or "checkpoints")

    xs, ys = make_data(features, int(config.get("seed", 0)))
    weights = [0.0] * features
    step = 0
    resume = report.resume_from()
    if resume:
        state = json.loads(Path(resume).read_text())
        step, weights = int(state["step"]), list(state["weights"])
        print(f"resuming from {resume} at step {step}")
    else:
        print("starting from scratch")
    print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}")

    rng = random.Random(step)
    while step < steps:
        if stop_requested:
            save_checkpoint(checkpoints, step, weights)
            print(f"stopping at step {step} on SIGTERM")
            return 0
        i = rng.randrange(len(xs))
        error = sum(w * x for w, x in zip(weights, xs[i], strict=True)) - ys[i]
        weights = [w - lr * error * x for w, x in zip(weights, xs[i], strict=True)]
        step += 1
        if fail_at is not None and step == int(fail_at) and attempt == 1:
            print(f"failing on purpose at step {step}", file=sys.stderr)
            return 1
        if step % 10 == 0 or step == steps:
            loss = sum(
                (sum(w * x for w, x in zip(weights, row, strict=True)) - y) ** 2
                for row, y in zip(xs, ys, strict=True)
            ) / len(xs)
            report.progress(step / steps, step=step, metrics={"loss": round(loss, 6)},
                            message=f"step {step}/{steps}")  # fmt: skip
            print(f"step {step} loss {loss:.4f}")
        if step % every == 0:
            save_checkpoint(checkpoints, step, weights)
        time.sleep(step_seconds)
    save_checkpoint(checkpoints, step, weights)
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
