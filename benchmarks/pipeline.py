"""End-to-end speed and memory of the local pipeline (`ecomrec pipeline run --local`), one subprocess per
dataset, exactly as a user runs it: Online Retail, and synthetic shops of given sizes.

    .venv/bin/python benchmarks/pipeline.py --online-retail --synthetic 1000000 10000000

Peak memory is the largest proportional set size (PSS) of the whole process tree (Python driver + Spark
JVM + workers), sampled every 0.2 s: shared pages count once (RSS counted a child the JVM forks with all
the JVM's heap again). Results: benchmarks/results/pipeline.{json,md}, with the machine they ran on."""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import REPO, machine, machine_line

RESULTS = REPO / "benchmarks" / "results"
ECOMREC = [sys.executable, "-m", "pipelines.cli"]


def run_measured(command: list[str], log: Path) -> tuple[float, list[tuple[float, float, dict[str, float]]], int]:
    """Wall seconds, samples (epoch time, tree PSS GB, GB per process kind), exit code."""
    started = time.perf_counter()
    samples: list[tuple[float, float, dict[str, float]]] = []
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        parent = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                kinds: dict[str, float] = {}
                for p in [parent, *parent.children(recursive=True)]:
                    kind = "driver" if p.pid == parent.pid else "jvm" if "java" in p.name() else "workers"
                    kinds[kind] = kinds.get(kind, 0.0) + _pss(p) / 1e9
                samples.append((time.time(), sum(kinds.values()), kinds))
            except psutil.Error:
                pass
            time.sleep(0.2)
    return time.perf_counter() - started, samples, process.returncode


def _pss(process: psutil.Process) -> int:
    """Proportional set size: pages shared between processes (a child the JVM has just forked shares all
    of the JVM's heap) counted once in total, where RSS counts them in each process."""
    try:
        return int(process.memory_full_info().pss)
    except psutil.AccessDenied:
        return int(process.memory_info().rss)


def step_seconds(output: Path) -> dict[str, float]:
    timings = {}
    for marker in sorted(output.glob("*/_SUCCESS")):
        try:
            timings[marker.parent.name] = round(json.loads(marker.read_text())["seconds"], 2)
        except (ValueError, KeyError):
            continue
    return timings


def step_peaks(output: Path, samples: list[tuple[float, float, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Peak tree PSS within each step (its _SUCCESS is written when it ends), split by process kind."""
    peaks: dict[str, dict[str, float]] = {}
    for step, seconds in step_seconds(output).items():
        end = (output / step / "_SUCCESS").stat().st_mtime
        inside = [sample for sample in samples if end - seconds <= sample[0] <= end]
        if inside:
            _, total, kinds = max(inside, key=lambda sample: sample[1])
            peaks[step] = {"total": round(total, 2), **{k: round(v, 2) for k, v in sorted(kinds.items())}}
    return peaks


def headline(output: Path) -> dict[str, Any]:
    path = output / "evaluation" / "evaluation.json"
    if not path.exists():
        return {}
    metrics = json.loads(path.read_text())["ranking_metrics"]
    result = {f"{name}_ndcg_at_10": round(m["ndcg_at_10"]["value"], 4) for name, m in metrics.items()}
    result["candidate_recall"] = round(metrics["two_stage"].get("candidate_recall", {}).get("value", float("nan")), 4)
    return result


def bench(name: str, raw: Path, work: Path, extra: list[str]) -> dict[str, Any]:
    output = work / name
    command = [*ECOMREC, "pipeline", "run", "--local", "--data", str(raw), "--output", str(output),
               "--registry", str(work / "registry"), "--no-resume", *extra]
    print(f"[{name}] {' '.join(command[2:])}", flush=True)
    seconds, samples, code = run_measured(command, work / f"{name}.log")
    peak_gb = max((total for _, total, _ in samples), default=0.0)
    result = {"dataset": name, "seconds": round(seconds, 1), "peak_pss_gb": round(peak_gb, 2), "exit_code": code,
              "steps": step_seconds(output), "step_peak_pss_gb": step_peaks(output, samples),
              "quality": headline(output)}
    print(f"[{name}] {result}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--online-retail", action="store_true", help="the real log (found locally)")
    parser.add_argument("--synthetic", type=int, nargs="*", default=[], help="synthetic shop sizes (events)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--tag", default="pipeline", help="results file name")
    parser.add_argument("--config", default=None, help="PipelineConfig JSON for the synthetic runs")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ecomrec-bench-"))
    info = machine()
    results = []
    if args.online_retail:
        from components.data.online_retail import ensure_online_retail, import_online_retail

        raw = work / "online-retail-raw"
        import_online_retail(ensure_online_retail(None), raw, overwrite=True)
        results.append(bench("online-retail", raw, work, []))
    for events in args.synthetic:
        from components.data.synth import generate_synthetic

        raw = work / f"synth-{events}"
        started = time.perf_counter()
        generate_synthetic(raw, events=events, seed=args.seed, overwrite=True)
        print(f"[synth-{events}] generated in {time.perf_counter() - started:.1f} s", flush=True)
        results.append(bench(f"synthetic-{events}", raw, work, ["--config", args.config] if args.config else []))
    by_size = {r["dataset"]: r for r in results}
    ratios = {}
    sizes = sorted(args.synthetic)
    for small, large in itertools.pairwise(sizes):
        a, b = by_size[f"synthetic-{small}"], by_size[f"synthetic-{large}"]
        ratios[f"time({large:,})/time({small:,})"] = round(b["seconds"] / a["seconds"], 2)
    report = {"machine": info, "results": results, "ratios": ratios}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.tag}.json").write_text(json.dumps(report, indent=2))
    lines = [f"# Local pipeline end to end ({args.tag})", "", f"Machine: {machine_line(info)}", "",
             "| dataset | wall s | peak PSS GB | steps (s) | two_stage / repurchase / als NDCG@10 | cand. recall |",
             "|---|---|---|---|---|---|"]
    for r in results:
        q = r["quality"]
        steps = ", ".join(f"{k} {v}" for k, v in r["steps"].items())
        lines.append(f"| {r['dataset']} | {r['seconds']} | {r['peak_pss_gb']} | {steps} | "
                     f"{q.get('two_stage_ndcg_at_10')} / {q.get('repurchase_ndcg_at_10')} / "
                     f"{q.get('als_ndcg_at_10')} | {q.get('candidate_recall')} |")
    lines += ["", *(f"- {k}: {v}" for k, v in ratios.items()), "",
              "Peak memory (PSS) within each step, GB (driver = the Python process, jvm = Spark, workers = "
              "ranker_data's processes):", ""]
    for r in results:
        peaks = "; ".join(f"{step} {p['total']} ({', '.join(f'{k} {v}' for k, v in p.items() if k != 'total')})"
                          for step, p in r["step_peak_pss_gb"].items())
        lines.append(f"- {r['dataset']}: {peaks}")
    (RESULTS / f"{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
