"""Is the console usable at 1,000 registry versions and for a user with 200 candidates?

A local registry gets 1,000 versions (each with an evaluation.json of the pipeline's shape; the last one
holds a synthetic bundle with 200 candidates for every warm user, the others a placeholder file: the
registry pages never open bundles). The console runs on a loopback socket (the same uvicorn), and each page
is fetched ``--repeat`` times over HTTP. Baselines measured in the same run: reading the registry through
the port (``list_versions``, what ``ecomrec models list`` does) for the registry pages, and the engine's
answer over HTTP (``GET /recommendations``) for the explorer. With Chromium installed, the browser's own
navigation time (request to load event, layout included) of each page is recorded too.

    .venv/bin/python benchmarks/console.py [--versions 1000] [--repeat 15]

Writes benchmarks/results/console.{json,md}.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serving_common import machine, machine_markdown, write_results

from components import schema as s

log = logging.getLogger("console-bench")


def evaluation(seed: int) -> dict[str, Any]:
    """evaluation.json in the pipeline's shape (every recommender, metric and K, three segments)."""
    def block(shift: float) -> dict[str, Any]:
        return {r: {s.metric_key(m, k): {"value": 0.1 + 0.05 * i + shift} for m in s.METRICS for k in s.KS}
                for i, r in enumerate(s.RECOMMENDERS)}

    shift = (seed % 97) / 10_000
    ranking = block(shift)
    ranking[s.TWO_STAGE] |= {"candidate_recall": {"value": 0.6}, "candidates_per_user": {"value": 199.6}}
    return {"ranking_metrics": ranking, "segments": {seg: block(shift) for seg in ("warm", "cold", "all")},
            "exclude_purchased": {"users": 900, "ranking_metrics": block(shift)},
            "users": {"evaluated": 1000, "warm": 900, "cold": 100},
            "split": {"test_start": "2011-11-09T00:00:00Z", "end": "2011-12-09T12:50:00Z", "test_days": 28},
            "data": {"catalog_items": 2000}, "headline": {"two_stage": 0.25 + shift,
                                                          "two_stage_over_best_baseline": 1.19}}


def timed(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 2), "max_ms": round(times[-1], 2)}


def browser_times(urls: dict[str, str]) -> dict[str, float]:
    """Chromium's navigation duration (request start to load event end) of each page, median of 5."""
    chromium, driver_path = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
    if not (chromium.exists() and driver_path.exists()):
        return {}
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    out = {}
    try:
        for name, url in urls.items():
            times = []
            for _ in range(6):
                driver.get(url)
                times.append(float(driver.execute_script(
                    "return performance.getEntriesByType('navigation')[0].duration")))
            out[name] = round(statistics.median(times[1:]), 1)
    finally:
        driver.quit()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    info = machine()
    from components.console.app import create_console_app
    from components.console.reports import LocalReports
    from components.registry.local import LocalRegistry
    from components.serving.app import create_app
    from components.serving.engine import build_serving_model
    from components.serving.settings import ServingSettings
    from components.serving.source import BundleFetcher
    from components.serving.synthetic import make_synthetic_bundle
    from components.serving.testing import serve_in_thread

    work = Path(tempfile.mkdtemp(prefix="console-bench-"))
    shop = make_synthetic_bundle(work / "shop", n_users=1000, n_items=2000, per_user=200, iterations=100, depth=6)
    placeholder = work / "placeholder.tar.gz"
    placeholder.write_bytes(b"registry pages never open a bundle")
    registry = LocalRegistry(work / "registry")
    started = time.perf_counter()
    for n in range(1, args.versions + 1):
        archive = shop.archive if n == args.versions else placeholder
        registry.register("ecomrec", str(archive), evaluation(n), description=f"bench {n}")
        if n % 10 == 0:
            registry.set_status("ecomrec", n, "Approved" if n % 20 == 0 else "Rejected")
    log.info("registered %d versions in %.1f s", args.versions, time.perf_counter() - started)
    last = args.versions
    user = shop.user_ids[0]  # warm (user 0 always is): 200 candidates

    with BundleFetcher(work / "bench-load").open(str(shop.archive)) as bundle:
        model = build_serving_model(bundle, source=str(shop.archive))
    candidates = model.candidate_count(model.user_index[user])
    baselines = {"registry list_versions (port)": timed(lambda: registry.list_versions("ecomrec"), args.repeat),
                 "engine recommend + payload, k=10 (in process)": timed(
                     lambda: model.to_payload(model.recommend(user, 10)), args.repeat)}
    settings = ServingSettings(model=str(shop.archive), work_dir=work / "serving", watch_interval_s=0)
    with serve_in_thread(create_app(settings)) as service, httpx.Client(base_url=service) as client:
        baselines["GET /recommendations, k=10 (HTTP)"] = timed(
            lambda: client.get("/recommendations", params={"user_id": user, "top_k": 10}).raise_for_status(),
            args.repeat)
    app = create_console_app(registry, LocalReports(registry), BundleFetcher(work / "console"))
    pages = {"registry, page 1 of 50 rows": "/registry",
             "registry, 250 rows a page": "/registry?per_page=250",
             "registry, last page": "/registry?page_number=20",
             f"version {last} (all metrics vs live)": f"/registry/{last}",
             f"approve confirmation of version {last}": f"/registry/{last}/approve",
             "explorer, user with 200 candidates, k=10": f"/explorer?version={last}&user_id={user}&k=10",
             "explorer, same user, k=100": f"/explorer?version={last}&user_id={user}&k=100"}
    results: dict[str, Any] = {}
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        started = time.perf_counter()
        first = client.get(f"/explorer?version={last}")
        first.raise_for_status()
        explorer_load_s = time.perf_counter() - started
        for name, path in pages.items():
            response = client.get(path)
            response.raise_for_status()
            results[name] = {"path": path, "bytes": len(response.content),
                             **timed(lambda p=path: client.get(p).raise_for_status(), args.repeat)}  # type: ignore[misc]
        after_change = []
        for n in range(args.repeat):  # a status changed elsewhere (the CLI): the next page re-reads the list
            registry.set_status("ecomrec", 1, "Approved" if n % 2 else "Rejected")
            started = time.perf_counter()
            response = client.get("/registry")
            response.raise_for_status()
            after_change.append((time.perf_counter() - started) * 1000)
        after_change.sort()
        results["registry, page 1, first view after a change"] = {
            "path": "/registry", "bytes": len(response.content), "median_ms": round(statistics.median(after_change), 2),
            "max_ms": round(after_change[-1], 2)}
        browser = browser_times({name: url + path for name, path in pages.items()})
    for name, ms in browser.items():
        results[name]["browser_navigation_ms"] = ms
    registry_base = baselines["registry list_versions (port)"]["median_ms"]
    engine_base = baselines["GET /recommendations, k=10 (HTTP)"]["median_ms"]
    for name, row in results.items():
        base = engine_base if name.startswith("explorer") else registry_base
        row["x_baseline"] = round(row["median_ms"] / base, 3) if base else None
    payload = {"machine": info, "versions": args.versions, "repeat": args.repeat, "user_candidates": candidates,
               "bundle": {"users": model.n_users, "items": model.n_items,
                          "candidate_rows": int(model.offsets[-1])},
               "explorer_first_load_s": round(explorer_load_s, 2), "baselines": baselines, "pages": results}
    lines = [
        "# Console at 1,000 versions and 200 candidates",
        "",
        f"`benchmarks/console.py --versions {args.versions} --repeat {args.repeat}`: a local registry of "
        f"{args.versions} versions (evaluation.json of the pipeline's shape each; every 10th Approved or "
        f"Rejected), a synthetic bundle of {model.n_users:,} users x {model.n_items:,} items with {candidates} "
        "candidates for the explored user. Pages fetched over HTTP on loopback (median and max of the "
        "repeats, after one warm-up); baselines from the same run: `list_versions` through the registry port "
        f"({registry_base} ms, what `ecomrec models list` reads; the console reads it once, then only the "
        "versions that changed) for "
        f"registry pages, the inference service's `GET /recommendations` for the same user over HTTP "
        f"({engine_base} ms; the engine's answer in process: "
        f"{baselines['engine recommend + payload, k=10 (in process)']['median_ms']} ms) for the explorer. "
        "Browser: Chromium's navigation time, request to load event (median of 5).",
        "",
        "| page | median ms | max ms | x baseline | browser ms | HTML bytes |",
        "|---|---|---|---|---|---|",
        *[f"| {name} | {r['median_ms']} | {r['max_ms']} | {r['x_baseline']} | "
          f"{r.get('browser_navigation_ms', '-')} | {r['bytes']:,} |" for name, r in results.items()],
        "",
        f"First explorer request for the bundle (load, verify, score every candidate once, as the service "
        f"does): {explorer_load_s:.2f} s; later requests reuse it.",
        "",
        machine_markdown(info),
    ]
    write_results("console", payload, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
