"""The service under hostile clients, and its HTTP speed, before and after issue 13's limits, in one run.

For each code tree (the baseline: a git revision, main by default, unpacked to a temporary folder; and this
checkout) it builds the same synthetic bundle with that tree's own code (the bundle format changed), starts
that tree's launcher (`python -m components.serving`, the container's command) and measures:

1. HTTP speed: wrk, GET /recommendations with random warm users, peak requests/s at 16 and 64
   connections and p50/p99 at a fixed 1,000 requests/s (as benchmarks/serving_http.py measures ours);
2. the hostile-client load of tests/test_serving_hostile.py (components/serving/hostile.py: slow and huge
   headers, idle connections, endless and abandoned bodies, reconnecting when cut) for --attack-seconds,
   with the server's resident memory sampled and a client asking GET /recommendations every 20 ms.

The machine is shared with other developers: the figures are noisy; compare the two trees of one run only.

    .venv/bin/python benchmarks/serving_hostile.py                      # ~2 min
    .venv/bin/python benchmarks/serving_hostile.py --baseline-rev 6d53059 --seconds 5 --attack-seconds 20

Writes benchmarks/results/serving_hostile.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from serving_common import REPO, free_port, machine, machine_markdown, python, run_wrk, server_process, write_results

sys.path.insert(0, str(REPO))
from components.serving.hostile import Attack, rss_mb, run_attack

log = logging.getLogger("serving-hostile")
PATH, SUFFIX = "/recommendations?user_id=", "&top_k=10"
SHOP = {"n_users": 3000, "n_items": 2000, "per_user": 150, "seed": 0}
BUILD = ("import json, sys; from components.serving.synthetic import make_synthetic_bundle; "
         "shop = make_synthetic_bundle(__import__('pathlib').Path(sys.argv[1]), **json.loads(sys.argv[2])); "
         "warm = sorted(set(shop.user_ids) - set(shop.cold_user_ids)); print(json.dumps([str(shop.archive), warm]))")


def build_bundle(tree: Path, out: Path) -> tuple[Path, list[str]]:
    result = subprocess.run([python(), "-c", BUILD, str(out), json.dumps(SHOP)], cwd=tree, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(tree)}, check=True)
    archive, warm = json.loads(result.stdout.strip().splitlines()[-1])
    return Path(archive), warm


def measure(tree: Path, label: str, workdir: Path, seconds: float, attack: Attack) -> dict[str, Any]:
    archive, users = build_bundle(tree, workdir / label)
    port = free_port()
    # -P: not the working directory first on sys.path, so PYTHONPATH picks the tree under test
    command = [python(), "-P", "-m", "components.serving", "--model", str(archive), "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "error"]
    env = {"PYTHONPATH": str(tree), "ECOMREC_WATCH_INTERVAL_S": "0", "TMPDIR": str(workdir)}
    url = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"tree": str(tree), "bundle": str(archive)}
    with server_process(command, port, env=env) as process:
        run_wrk(url, users, path=PATH, suffix=SUFFIX, connections=16, duration_s=2)  # warm-up
        out["peak"] = [run_wrk(url, users, path=PATH, suffix=SUFFIX, connections=c, duration_s=seconds)
                       for c in (16, 64)]
        out["paced_1000"] = run_wrk(url, users, path=PATH, suffix=SUFFIX, connections=16, duration_s=seconds,
                                    rate=1000)
        baseline = rss_mb(process.pid)
        outcome = run_attack("127.0.0.1", port, users, attack, server_pid=process.pid)
        out["hostile"] = {
            "rss_before_mb": round(baseline, 1), "rss_peak_mb": round(outcome.peak_rss_mb, 1),
            "rss_growth_mb": round(outcome.peak_rss_mb - baseline, 1),
            "rss_after_mb": round(rss_mb(process.pid), 1),
            "probe_status": outcome.probe_status, "probe_errors": len(outcome.probe_errors),
            "probe_p50_ms": round(outcome.latency_quantile(0.5) * 1000, 2),
            "probe_p99_ms": round(outcome.latency_quantile(0.99) * 1000, 2),
            "connections_cut_by_server": outcome.cut_by_server,
        }
    for run in out["peak"]:
        log.info("%s c=%d: %.0f req/s, p99 %.2f ms, errors %d", label, run["connections"], run["rps"],
                 run["latency_ms"]["p99"], run["errors"])
    log.info("%s hostile: %s", label, out["hostile"])
    return out


def markdown(info: dict[str, Any], results: dict[str, dict[str, Any]], attack: Attack, revision: str) -> str:
    base, ours = results["baseline"], results["ours"]
    lines = ["# Serving under hostile clients, before and after issue 13\n", machine_markdown(info),
             f"Baseline: `{revision}` unpacked; ours: this checkout. Same synthetic bundle shape {SHOP}, each built "
             "by its tree's code. The machine is shared with other developers: figures are noisy.\n",
             "| | baseline | ours | ours / baseline |", "|---|---|---|---|"]
    for i, c in enumerate((16, 64)):
        b, o = base["peak"][i]["rps"], ours["peak"][i]["rps"]
        lines.append(f"| peak req/s, {c} connections | {b:,.0f} | {o:,.0f} | {o / b:.2f} |")
    for q in ("p50", "p99"):
        b, o = base["paced_1000"]["latency_ms"][q], ours["paced_1000"]["latency_ms"][q]
        lines.append(f"| {q} at 1,000 req/s (ms) | {b:.2f} | {o:.2f} | {o / b:.2f} |")
    hb, ho = base["hostile"], ours["hostile"]
    lines += [
        f"| RSS before the attack (MB) | {hb['rss_before_mb']} | {ho['rss_before_mb']} | |",
        f"| RSS growth under attack (MB) | {hb['rss_growth_mb']} | {ho['rss_growth_mb']} | |",
        f"| /recommendations answered during the attack | {sum(hb['probe_status'].values())} "
        f"{hb['probe_status']} | {sum(ho['probe_status'].values())} {ho['probe_status']} | |",
        f"| /recommendations p99 during the attack (ms) | {hb['probe_p99_ms']} | {ho['probe_p99_ms']} | |",
        f"| hostile connections ended (cut by the server or timed out by the client) | "
        f"{sum(hb['connections_cut_by_server'].values())} | "
        f"{sum(ho['connections_cut_by_server'].values())} | |",
        "",
        f"Attack: {attack.connections} connections for {attack.seconds:g} s ({attack}); each reconnects when "
        "cut. Stated bound for ours (tests/test_serving_hostile.py): growth <= connections x 128 KB + one body "
        "limit per body-sending connection + 32 MB.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-rev", default="main")
    parser.add_argument("--seconds", type=float, default=5.0, help="each wrk run")
    parser.add_argument("--attack-seconds", type=float, default=15.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per probe otherwise
    info = machine()
    attack = Attack(seconds=args.attack_seconds)
    with tempfile.TemporaryDirectory(prefix="serving-hostile-") as tmp:
        work = Path(tmp)
        baseline_tree = work / "baseline"
        baseline_tree.mkdir()
        archive = subprocess.run(["git", "archive", args.baseline_rev], cwd=REPO, capture_output=True, check=True)
        subprocess.run(["tar", "x", "-C", str(baseline_tree)], input=archive.stdout, check=True)
        revision = subprocess.run(["git", "rev-parse", "--short", args.baseline_rev], cwd=REPO, capture_output=True,
                                  text=True, check=True).stdout.strip()
        results = {"baseline": measure(baseline_tree, "baseline", work, args.seconds, attack),
                   "ours": measure(REPO, "ours", work, args.seconds, attack)}
    payload = {"machine": info, "baseline_rev": revision, "attack": attack.__dict__, "shop": SHOP,
               "results": results}
    write_results("serving_hostile", payload, markdown(info, results, attack, revision))


if __name__ == "__main__":
    main()
