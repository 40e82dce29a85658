"""Shared parts of the serving benchmarks: the bundle under test, the machine record, wrk (installed from
Debian when missing), server processes on loopback, and the results files.

Every benchmark sends traffic to 127.0.0.1 only, with bounded durations, and stops what it started."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
log = logging.getLogger("serving-bench")

# Online Retail's shape after ETL (customers, products, candidates a user): the synthetic stand-in's size.
N_USERS, N_ITEMS, PER_USER = 4300, 3900, 200


# ------------------------------------------------------------------------------------------ bundle
@dataclass(frozen=True)
class BundleUnderTest:
    archive: Path
    kind: str  # "given" (a pipeline's bundle) or "synthetic"
    version: str
    users: int
    items: int
    candidate_rows: int
    users_with_candidates: int
    warm_user_ids: list[str]  # users with candidate rows: the requests that really score
    all_user_ids: list[str]

    def describe(self) -> dict[str, Any]:
        return {"archive": str(self.archive), "kind": self.kind, "version": self.version, "users": self.users,
                "items": self.items, "candidate_rows": self.candidate_rows,
                "users_with_candidates": self.users_with_candidates,
                "candidates_per_user": round(self.candidate_rows / max(self.users_with_candidates, 1), 1)}


def resolve_bundle(path: Path | None, *, workdir: Path) -> BundleUnderTest:
    """The given bundle (model.tar.gz or folder), or a synthetic one in Online Retail's shape."""
    from components import schema as s
    from components.bundle import load_bundle

    kind = "given"
    if path is None:
        from components.serving.synthetic import make_synthetic_bundle

        log.info("no --bundle: writing a synthetic bundle in Online Retail's shape (%d users, %d items, %d "
                 "candidates a user; ~1 min)", N_USERS, N_ITEMS, PER_USER)
        path = make_synthetic_bundle(workdir / "synthetic", n_users=N_USERS, n_items=N_ITEMS, per_user=PER_USER,
                                     iterations=300, depth=6).archive
        kind = "synthetic"
    bundle = load_bundle(path)
    counts = np.zeros(bundle.n_users, dtype=np.int64)
    for part in bundle.iter_candidate_parts(columns=()):  # the key columns only
        counts += np.bincount(part[s.USER_IDX].to_numpy(), minlength=bundle.n_users)
    warm = [str(u) for u in bundle.user_ids[counts > 0]]
    return BundleUnderTest(archive=Path(path), kind=kind, version=bundle.version, users=bundle.n_users,
                           items=len(bundle.item_ids), candidate_rows=bundle.candidate_row_count,
                           users_with_candidates=len(warm), warm_user_ids=warm,
                           all_user_ids=[str(u) for u in bundle.user_ids])


# ------------------------------------------------------------------------------------------ machine
def machine() -> dict[str, Any]:
    """What the figures were measured on, including how busy the machine was."""
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gb = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kb = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        memory_gb = round(total_kb / 1024 / 1024, 1)
    import catboost
    import fastapi
    import uvicorn

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gb": memory_gb, "os": platform.platform(),
        "python": platform.python_version(), "catboost": catboost.__version__, "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__, "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": commit, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "note": "shared development machine unless stated otherwise; compare figures of one run only",
    }


# ------------------------------------------------------------------------------------------ processes
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server_process(command: Sequence[str], port: int, *, env: dict[str, str] | None = None,
                   ready_path: str = "/readyz", timeout_s: float = 180.0,
                   cwd: Path = REPO) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server (in ``cwd``: another tree for a baseline), wait until ``ready_path`` answers 200,
    stop it (by its pid) on exit."""
    log_file = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(list(command), cwd=cwd, env={**os.environ, **(env or {})}, stdout=log_file,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=5) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited with {process.returncode}; log: {log_file.name}")
                try:
                    if client.get(f"http://127.0.0.1:{port}{ready_path}").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server not ready within {timeout_s} s; log: {log_file.name}")
                time.sleep(0.25)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)  # its own session: the uvicorn workers go with it
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
        log_file.close()


def process_tree_rss_mb(pid: int) -> float:
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in processes if p.is_running()) / 1e6
    except psutil.NoSuchProcess:
        return float("nan")


# ------------------------------------------------------------------------------------------ wrk
def ensure_wrk() -> str:
    """Debian's wrk, installed with apt-get when missing (the load generator of every HTTP figure)."""
    found = shutil.which("wrk")
    if found:
        return found
    log.info("installing wrk from Debian (apt-get)")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is still not on PATH after apt-get install wrk")
    return found


LUA_TEMPLATE = r"""
-- Random users; with a target rate, a per-thread schedule paces requests (wrk2-style pacing; latency is
-- measured from the actual send, so a stalled server is under-reported: watch achieved vs target rate).
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local users = {USERS}
local path_prefix = "PATH_PREFIX"
local path_suffix = "PATH_SUFFIX"
local interval_ms = INTERVAL_MS  -- per thread; 0 = as fast as the connections go
local next_at = nil
local thread_id = 0
local threads = {}

function setup(thread)
  thread_id = thread_id + 1
  thread:set("id", thread_id)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(SEED + (id or 0) * 7919)
end

function delay()
  if interval_ms <= 0 then return 0 end
  local now = now_ms()
  if next_at == nil then next_at = now + math.random() * interval_ms end
  local wait = next_at - now
  next_at = next_at + interval_ms
  if wait < 0 then return 0 end
  return wait
end

function request()
  return wrk.format("GET", path_prefix .. users[math.random(#users)] .. path_suffix)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"mean": %.1f, "p50": %d, "p90": %d, ' ..
    '"p99": %d, "p999": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"""


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal for these ids


def run_wrk(url: str, user_ids: Sequence[str], *, path: str, suffix: str, connections: int, duration_s: float,
            threads: int = 1, rate: float | None = None, seed: int = 1, timeout_s: float = 5.0) -> dict[str, Any]:
    """Run wrk against ``url + path + <user> + suffix``; return its summary plus requests/s, errors
    (socket errors + non-2xx/3xx answers) and latencies in ms. One wrk thread by default: it drives tens of
    thousands of requests a second and leaves the other cycles to the server it measures."""
    from urllib.parse import quote

    wrk = ensure_wrk()
    interval = 0.0 if not rate else threads * 1000.0 / rate
    users = ", ".join(_lua_string(quote(u, safe="")) for u in user_ids)
    script = (LUA_TEMPLATE.replace("{USERS}", "{" + users + "}").replace("PATH_PREFIX", path)
              .replace("PATH_SUFFIX", suffix).replace("INTERVAL_MS", f"{interval:.6f}")
              .replace("SEED", str(seed)))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
               f"--timeout={timeout_s:g}s", "-s", handle.name, url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 120)
    Path(handle.name).unlink(missing_ok=True)
    line = next((x for x in result.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary (exit {result.returncode}): {result.stdout}\n{result.stderr}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw["errors"].values())
    lat = {k: round(v / 1000.0, 3) for k, v in raw["latency_us"].items()}
    return {"connections": connections, "threads": threads, "target_rps": rate, "duration_s": round(seconds, 2),
            "requests": raw["requests"], "rps": round(raw["requests"] / seconds, 1), "errors": errors,
            "error_detail": raw["errors"], "latency_ms": lat}


# ------------------------------------------------------------------------------------------ results
def write_results(name: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    md_path.write_text(markdown)
    log.info("wrote %s and %s", json_path, md_path)
    return json_path, md_path


def machine_markdown(info: dict[str, Any]) -> str:
    return (f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB, {info['os']}; "
            f"Python {info['python']}, CatBoost {info['catboost']}, FastAPI {info['fastapi']}, "
            f"uvicorn {info['uvicorn']}; load average at start {info['load_average_at_start']}; "
            f"commit {info['git_commit']}; {info['measured_at']}. {info['note']}.\n")


def python() -> str:
    return sys.executable


def soak_summary(segments: list[dict[str, Any]], samples: list[tuple[float, float]], errors: int) -> dict[str, Any]:
    """A soak's shared figures and goals (0 errors, resident memory growth < 5 %) from its wrk segments and
    (seconds, RSS MB) samples taken from the end of the warm-up."""
    rss_start, rss_end = samples[0][1], samples[-1][1]
    growth = rss_end / rss_start - 1
    # bounded caches filling show early and flatten; a leak keeps its slope: the second half tells them apart
    second_half = rss_end / samples[len(samples) // 2][1] - 1
    return {
        "achieved_rps": round(sum(s["requests"] for s in segments)
                              / max(sum(s["duration_s"] for s in segments), 1e-9), 1),
        "p99_ms_worst_segment": max(s["latency_ms"]["p99"] for s in segments),
        "rss_mb": {"start": rss_start, "end": rss_end, "max": max(v for _, v in samples),
                   "growth_share": round(growth, 4), "growth_share_second_half": round(second_half, 4)},
        "rss_samples": samples, "segments": segments,
        "goals": {"errors": {"value": errors, "goal": "0", "met": errors == 0},
                  "rss_growth": {"value": round(growth, 4), "goal": "< 0.05", "met": growth < 0.05}},
    }

