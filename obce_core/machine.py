"""What this machine offers obce's work: the devices torch can use, the cores, the memory for workers.

Checked before any work (the CLI checks ``--device`` and ``--workers`` when it parses them), so a
device torch was not built for, or more worker processes than the cores and the memory can carry,
is one clear refusal instead of a traceback or a machine swapping model copies.
"""

from __future__ import annotations

import os

import psutil
import torch

__all__ = ["DEVICE_TYPES", "WORKER_BYTES", "DeviceError", "available_devices", "check_device", "check_workers",
           "max_workers", "usable_cores"]

DEVICE_TYPES = ("cpu", "cuda", "mps")
# A plan worker holds torch, one model copy and the encoded split: about 0.8 GB for all-MiniLM-L6-v2
# (measured in the hostile trial of issue 26); 1 GiB is the estimate when the model is not known yet.
WORKER_BYTES = 2**30


class DeviceError(ValueError):
    """A device this machine cannot run on; the message names the device and the ones present."""


def available_devices() -> list[str]:
    """The devices torch can run on here: ``cpu``, then each GPU (``cuda:0``, ...) or ``mps``."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def check_device(device: str | torch.device, what: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` if this machine can run on it; else ``DeviceError`` naming it."""
    text = str(device).strip()
    here = ", ".join(available_devices())
    try:
        parsed = torch.device(text) if text else None
    except (RuntimeError, TypeError, ValueError):
        parsed = None
    if parsed is None:
        raise DeviceError(f"{what} {text!r} is not a device name; use one of this machine's devices: {here}.")
    if parsed.type not in DEVICE_TYPES:
        raise DeviceError(f"{what} {text!r}: obce runs on {', '.join(DEVICE_TYPES)} devices, not {parsed.type!r}; "
                          f"this machine has: {here}.")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{what} {text!r}: this machine has no CUDA GPU that torch {torch.__version__} can use; "
                              f"use one of: {here}.")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise DeviceError(f"{what} {text!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s); use one of: "
                              f"{here}.")
    if parsed.type == "mps" and "mps" not in available_devices():
        raise DeviceError(f"{what} {text!r}: Apple's MPS is not available here; use one of: {here}.")
    return parsed


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not every system has affinity
        return max(1, os.cpu_count() or 1)


def _gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def max_workers(per_worker_bytes: int = WORKER_BYTES, *, on_gpus: bool | None = None) -> int:
    """The most plan workers this machine carries: one per GPU (``on_gpus``, default: when there are
    GPUs), else one per usable core, and no more than the memory available now holds at
    ``per_worker_bytes`` each (at least 1)."""
    on_gpus = bool(_gpus()) if on_gpus is None else on_gpus
    slots = _gpus() if on_gpus else usable_cores()
    by_memory = psutil.virtual_memory().available // max(int(per_worker_bytes), 1)
    return int(max(1, min(slots, by_memory)))


def check_workers(workers: int, what: str = "workers", per_worker_bytes: int = WORKER_BYTES, *,
                  on_gpus: bool | None = None) -> int:
    """``workers`` if this machine carries that many worker processes (see ``max_workers``); else
    ``ValueError`` with the bound."""
    limit = max_workers(per_worker_bytes, on_gpus=on_gpus)
    if workers > limit:
        gpus = _gpus() if (on_gpus is None or on_gpus) else 0
        slots = f"{gpus} GPU(s)" if gpus else f"{usable_cores()} usable CPU core(s)"
        free = psutil.virtual_memory().available / 2**30
        raise ValueError(f"{what} {workers} is more than this machine carries: at most {limit} (one per "
                         f"{'GPU' if gpus else 'core'}: {slots}; {free:.1f} GiB of memory free at about "
                         f"{per_worker_bytes / 2**30:.1f} GiB per worker, an estimate). Use {limit} or fewer.")
    return workers
