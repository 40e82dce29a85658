"""The hot-path lane for GET /recommendations answers exactly what the documented FastAPI route answers:
same status, content type and bytes, for valid requests and for every kind of malformed one (which it
hands to the route). Two servers on real sockets, one with the lane and one without; synthetic bundle
(write_bundle, real CatBoost)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from components.serving import metric_names as mn
from components.serving.app import create_app
from components.serving.settings import ServingSettings
from components.serving.synthetic import SyntheticShop, make_synthetic_bundle
from components.serving.testing import serve_in_thread


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> SyntheticShop:
    return make_synthetic_bundle(tmp_path_factory.mktemp("fast") / "out", n_users=120, n_items=80, per_user=30)


@pytest.fixture(scope="module")
def servers(shop: SyntheticShop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    def settings(fast: bool) -> ServingSettings:
        return ServingSettings(model=str(shop.archive), watch_interval_s=0, max_top_k=40, fast_path=fast,
                               work_dir=tmp_path_factory.mktemp("work"))

    with serve_in_thread(create_app(settings(True))) as fast, serve_in_thread(create_app(settings(False))) as slow:
        yield fast, slow


def queries(shop: SyntheticShop) -> list[str]:
    warm = next(u for u in shop.user_ids if u not in set(shop.cold_user_ids))
    cold = shop.cold_user_ids[0]
    items = ",".join(shop.item_ids[:5])
    return [
        f"user_id={warm}", f"user_id={warm}&top_k=3", f"user_id={warm}&top_k=40", f"user_id={warm}&top_k=010",
        f"user_id={cold}&top_k=5", "user_id=nobody", "user_id=n%C3%B6body%20%F0%9F%98%80", "user_id=%2B1%2C2",
        f"user_id={warm}&exclude={items}", f"user_id={warm}&exclude=", f"user_id={warm}&exclude=,,%20,",
        f"user_id={warm}&exclude_purchased=true", f"user_id={warm}&exclude_purchased=1",
        f"user_id={warm}&exclude_purchased=false", f"user_id={warm}&exclude_purchased=0",
        f"user_id={warm}&exclude_purchased=yes", f"user_id={warm}&exclude_purchased=True",
        f"user_id={warm}&category=mugs", f"user_id={warm}&category=nothing&top_k=2",
        f"user_id={warm}&category=mugs&exclude={items}&exclude_purchased=true&top_k=7",
        # malformed or unusual: the lane must hand these to the route
        "", "top_k=5", "user_id=", "user_id=" + "x" * 257, "user_id=" + "x" * 256,
        f"user_id={warm}&top_k=0", f"user_id={warm}&top_k=41", f"user_id={warm}&top_k=-1",
        f"user_id={warm}&top_k=abc", f"user_id={warm}&top_k=%2B5", f"user_id={warm}&top_k=%205",
        f"user_id={warm}&top_k=1e1", f"user_id={warm}&top_k=", f"user_id={warm}&top_k=9999999999999",
        f"user_id={warm}&user_id=nobody", f"user_id={warm}&surprise=1", f"user_id={warm}&category=",
        f"user_id={warm}&exclude=" + "a" * 4001, f"user_id={warm}&exclude=" + ",".join("a" * 1001),
        f"user_id={warm}&exclude_purchased=maybe", "user_id=%FF%FE", "user_id=a%00b",
    ]


def test_fast_lane_and_route_give_identical_answers(servers: tuple[str, str], shop: SyntheticShop) -> None:
    fast, slow = servers
    with httpx.Client(timeout=10) as client:
        for query in queries(shop):
            a = client.get(f"{fast}/recommendations?{query}")
            b = client.get(f"{slow}/recommendations?{query}")
            assert (a.status_code, a.headers["content-type"], a.content) == \
                   (b.status_code, b.headers["content-type"], b.content), query
            assert a.status_code in (200, 422), query


def test_fast_answers_are_counted_under_the_route(servers: tuple[str, str], shop: SyntheticShop) -> None:
    fast, _ = servers
    with httpx.Client(base_url=fast, timeout=10) as client:
        def count() -> float:
            for line in client.get("/metrics").text.splitlines():
                if line.startswith(mn.REQUEST_LATENCY_SECONDS + "_count") and 'route="/recommendations"' in line \
                        and 'status="200"' in line:
                    return float(line.rsplit(" ", 1)[1])
            return 0.0

        before = count()
        for user_id in shop.user_ids[:7]:
            assert client.get("/recommendations", params={"user_id": user_id}).status_code == 200
        assert count() - before == 7
