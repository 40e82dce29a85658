"""Shared fixtures: one local Spark session for the whole suite, the real Online Retail file, and a
small deterministic raw dataset in the contract of DATA_CONTRACT.md."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components import schema as s

REPO = Path(__file__).resolve().parents[1]
ONLINE_RETAIL = Path(
    os.environ.get("ECOMREC_ONLINE_RETAIL", REPO.parent / "shared/data/online-retail/online_retail.csv.gz")
)


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    from components.spark import get_spark

    session = get_spark("ecomrec-tests", driver_memory="4g")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def online_retail_csv() -> Path:
    if not ONLINE_RETAIL.exists():
        pytest.fail(f"Online Retail not found at {ONLINE_RETAIL}; set ECOMREC_ONLINE_RETAIL")
    return ONLINE_RETAIL


def make_tiny_raw(root: Path, *, n_users: int = 60, n_items: int = 40, days: int = 150, seed: int = 7) -> Path:
    """A deterministic shop: users with favourite items they re-buy, a popular head, views and carts
    before purchases, a few returns. Written as CSV tables under ``root`` (events/, items/, users/)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01")
    categories = np.array(["mugs", "bags", "cards", "lights"])
    item_pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    item_pop /= item_pop.sum()
    rows: list[dict[str, object]] = []
    for u in range(n_users):
        favourites = rng.choice(n_items, size=4, replace=False, p=item_pop)
        for _ in range(int(rng.integers(3, 40))):
            ts = start + pd.Timedelta(minutes=int(rng.integers(0, days * 24 * 60)))
            item = int(rng.choice(favourites) if rng.random() < 0.6 else rng.choice(n_items, p=item_pop))
            base = {s.USER_ID: f"u{u:03d}", s.ITEM_ID: f"sku-{item:03d}", s.SESSION_ID: f"s{u}-{ts.value}"}
            rows.append({**base, s.EVENT_TYPE: s.VIEW, s.TIMESTAMP: ts, s.QUANTITY: 1, s.PRICE: 2.5 + item})
            if rng.random() < 0.7:
                rows.append({**base, s.EVENT_TYPE: s.ADD_TO_CART, s.TIMESTAMP: ts + pd.Timedelta(minutes=1),
                             s.QUANTITY: 1, s.PRICE: 2.5 + item})
                if rng.random() < 0.8:
                    rows.append({**base, s.EVENT_TYPE: s.PURCHASE, s.TIMESTAMP: ts + pd.Timedelta(minutes=2),
                                 s.QUANTITY: int(rng.integers(1, 6)), s.PRICE: 2.5 + item})
                    if rng.random() < 0.03:
                        rows.append({**base, s.EVENT_TYPE: s.RETURN, s.TIMESTAMP: ts + pd.Timedelta(days=3),
                                     s.QUANTITY: 1, s.PRICE: 2.5 + item})
    events = pd.DataFrame(rows).sort_values(s.TIMESTAMP, kind="stable")
    events[s.TIMESTAMP] = events[s.TIMESTAMP].dt.strftime("%Y-%m-%dT%H:%M:%S")
    items = pd.DataFrame({
        s.ITEM_ID: [f"sku-{i:03d}" for i in range(n_items)],
        "category": categories[np.arange(n_items) % len(categories)],
        "price": 2.5 + np.arange(n_items, dtype=float),
    })
    users = pd.DataFrame({
        s.USER_ID: [f"u{u:03d}" for u in range(n_users)],
        "country": np.where(np.arange(n_users) % 3 == 0, "France", "United Kingdom"),
    })
    for name, frame in ((s.EVENTS, events), (s.ITEMS, items), (s.USERS, users)):
        (root / name).mkdir(parents=True, exist_ok=True)
        frame.to_csv(root / name / "part-0.csv", index=False)
    return root


@pytest.fixture
def tiny_raw(tmp_path: Path) -> Path:
    return make_tiny_raw(tmp_path / "raw")


TINY_RUN_CONFIG_GATE = {"ndcg_at_10_floor": 0.0, "must_beat_als": False, "must_beat_baselines": False}


@pytest.fixture(scope="session")
def tiny_run(spark: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole local pipeline, run once per session on the tiny shop; tests read its outputs
    (and must not modify them: copy first)."""
    from components.config import GateConfig, PipelineConfig
    from pipelines.local import run_local

    root = tmp_path_factory.mktemp("tiny-run")
    raw = make_tiny_raw(root / "raw")
    config = PipelineConfig(gate=GateConfig(**TINY_RUN_CONFIG_GATE))
    run_local(raw, root / "run", config, step_options={"register": ["--registry", str(root / "registry")]})
    return root / "run"


@pytest.fixture(scope="session")
def online_retail_run(spark: object, online_retail_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's first command in process, once per session: import the real log, run every step,
    register (the registry is OUTPUT/../registry). ECOMREC_RUN_DIR reuses an existing run's folder."""
    existing = os.environ.get("ECOMREC_RUN_DIR")
    if existing:
        return Path(existing)
    from components.config import PipelineConfig
    from components.data.online_retail import import_online_retail
    from pipelines.local import run_local

    root = tmp_path_factory.mktemp("online-retail-run")
    import_online_retail(online_retail_csv, root / "raw")
    run_local(root / "raw", root / "run", PipelineConfig(),
              step_options={"register": ["--registry", str(root / "registry")]})
    return root / "run"
