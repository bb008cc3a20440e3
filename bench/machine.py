"""The machine a benchmark ran on, printed at the top of every bench script's output."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> str:
    return f"machine: {os.cpu_count()} cpus (nproc), {cpu_model()}, Python {platform.python_version()}"
