"""Which GPUs this host has, and how busy they are (SPEC §4 ``--gpus``)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import subprocess
from typing import Any

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GpuInventory:
    """The GPU ids the worker may hand out, and where live stats come from."""

    ids: tuple[int, ...]
    source: str  # "nvml", "nvidia-smi", "given", "virtual" or "none"

    def devices(self) -> list[dict[str, Any]]:
        """Per-device name, utilisation and memory, where the source can tell."""
        if self.source == "nvml":
            stats = {d["id"]: d for d in _nvml_devices() or []}
        elif self.source in ("nvidia-smi", "given"):
            stats = {d["id"]: d for d in _smi_devices() or []}
        else:
            stats = {}
        name = "virtual" if self.source == "virtual" else None
        return [stats.get(i, {"id": i, "name": name}) for i in self.ids]


def discover(gpus: str = "auto", virtual: int | None = None) -> GpuInventory:
    """``auto`` (NVML, else nvidia-smi, else none), ``none``, or ids like ``0,1,3``.

    ``virtual`` gives N fake slots (ids 0…N−1) for machines without GPUs.
    """
    if virtual is not None:
        if virtual < 0:
            raise ValueError("--virtual-gpus must be 0 or more")
        return GpuInventory(tuple(range(virtual)), "virtual")
    choice = gpus.strip().lower()
    if choice == "none":
        return GpuInventory((), "none")
    if choice == "auto":
        found = _nvml_devices()
        if found is not None:
            return GpuInventory(tuple(d["id"] for d in found), "nvml")
        found = _smi_devices()
        if found is not None:
            return GpuInventory(tuple(d["id"] for d in found), "nvidia-smi")
        return GpuInventory((), "none")
    try:
        ids = tuple(int(part) for part in choice.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"--gpus takes auto, none or ids like 0,1,2 (got {gpus!r})") from exc
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"--gpus ids must be distinct and not negative (got {gpus!r})")
    return GpuInventory(ids, "given")


def _nvml_devices() -> list[dict[str, Any]] | None:
    try:
        import pynvml  # from nvidia-ml-py, an optional extra
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except Exception:
                utilization = None
            devices.append({
                "id": index,
                "name": name.decode() if isinstance(name, bytes) else str(name),
                "utilization": utilization,
                "memory_used": int(memory.used),
                "memory_total": int(memory.total),
            })  # fmt: skip
        return devices
    except Exception:
        log.warning("NVML failed to list devices", exc_info=True)
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _smi_devices() -> list[dict[str, Any]] | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    query = "index,name,utilization.gpu,memory.used,memory.total"
    try:
        done = subprocess.run(
            [smi, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    devices = []
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5 or not parts[0].isdigit():
            continue
        devices.append({
            "id": int(parts[0]),
            "name": parts[1],
            "utilization": _number(parts[2]),
            "memory_used": _mib(parts[3]),
            "memory_total": _mib(parts[4]),
        })  # fmt: skip
    return devices


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _mib(text: str) -> int | None:
    value = _number(text)
    return int(value * 1024 * 1024) if value is not None else None
