"""What a benchmark ran on: every result file records it, including how busy the machine was."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _first(path: str, key: str) -> str | None:
    file = Path(path)
    if not file.exists():
        return None
    return next((line.split(":", 1)[1].strip() for line in file.read_text().splitlines() if line.startswith(key)),
                None)


def machine(packages: tuple[str, ...] = ("pyspark", "catboost", "implicit", "numpy", "pandas")) -> dict[str, Any]:
    memory_kb = _first("/proc/meminfo", "MemTotal")
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr.splitlines()[0]
    except (OSError, IndexError):
        java = "not found"
    versions: dict[str, str] = {}
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False).stdout.strip()
    return {
        "cpu": _first("/proc/cpuinfo", "model name") or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gb": round(int(memory_kb.split()[0]) / 1024**2, 1) if memory_kb else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "java": java,
        "versions": versions,
        "commit": commit,
        "load_average_at_start": list(os.getloadavg()),
    }


def machine_line(info: dict[str, Any]) -> str:
    return (f"{info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB; Python {info['python']}; {info['java']}; "
            + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
            + f"; commit {info['commit']}; load average at start {info['load_average_at_start'][0]:.1f}")
