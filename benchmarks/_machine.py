"""A one-line description of the machine a benchmark ran on, for the JSON it prints."""

from __future__ import annotations

import platform

import psutil
import torch


def describe_machine() -> dict[str, object]:
    cuda = torch.cuda.is_available()
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": psutil.cpu_count(logical=True),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
