"""The same training job in PyTorch, on the GPUs the worker assigned.

A small MLP on synthetic data. The worker sets CUDA_VISIBLE_DEVICES to
exactly this job's GPUs, so "cuda:0" is the first GPU it was given. Reports,
checkpoints (torch.save) and SIGTERM handling as in train_sgd.py.

Config keys: steps (300), lr (0.01), checkpoint_every (50), batch (256),
hidden (256), step_seconds (0).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import torch

from jobqueue import report

stop_requested = False


def on_sigterm(signum, frame):
    global stop_requested
    stop_requested = True


def main() -> int:
    signal.signal(signal.SIGTERM, on_sigterm)
    config = report.config()
    steps = int(config.get("steps", 300))
    every = int(config.get("checkpoint_every", 50))
    batch = int(config.get("batch", 256))
    hidden = int(config.get("hidden", 256))
    step_seconds = float(config.get("step_seconds", 0))
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}); CUDA_VISIBLE_DEVICES="
          f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}")  # fmt: skip

    torch.manual_seed(0)
    true_w = torch.randn(32, 1, device=device)
    model = torch.nn.Sequential(
        torch.nn.Linear(32, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
    ).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=float(config.get("lr", 0.01)))
    step = 0
    resume = report.resume_from()
    if resume:
        state = torch.load(resume, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        print(f"resuming from {resume} at step {step}")
    checkpoints = Path(report.checkpoint_dir() or "checkpoints")
    checkpoints.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        path = checkpoints / f"step-{step:06d}.pt"
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": step}, path.with_suffix(".tmp"))  # fmt: skip
        path.with_suffix(".tmp").replace(path)
        report.checkpoint(str(path), step=step)

    while step < steps:
        if stop_requested:
            save()
            print(f"stopping at step {step} on SIGTERM")
            return 0
        x = torch.randn(batch, 32, device=device)
        loss = torch.nn.functional.mse_loss(model(x), x @ true_w)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % 10 == 0 or step == steps:
            report.progress(step / steps, step=step, metrics={"loss": loss.item()},
                            message=f"step {step}/{steps} on {name}")  # fmt: skip
        if step % every == 0:
            save()
        if step_seconds:
            time.sleep(step_seconds)
    save()
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
