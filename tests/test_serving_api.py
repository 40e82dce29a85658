"""The inference service over a real loopback socket: recommendations, fallbacks, 422s, the SageMaker
contract, health and metrics. The bundle is synthetic (random shop) but real: written by write_bundle,
scored by a real CatBoost model."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import orjson
import pandas as pd
import pytest

from components import schema as s
from components.ranker.model import FeatureSpec, PopularFallback, Ranker, rank_top_k
from components.serving import metric_names as mn
from components.serving.app import create_app
from components.serving.settings import ServingSettings
from components.serving.synthetic import SyntheticShop, make_synthetic_bundle
from components.serving.testing import serve_in_thread


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> SyntheticShop:
    return make_synthetic_bundle(tmp_path_factory.mktemp("bundle") / "out", n_users=200, n_items=120,
                                 per_user=40)


def _served(shop: SyntheticShop, tmp_path_factory: pytest.TempPathFactory, **settings: Any) -> Iterator[str]:
    """A real server on a socket for the module's tests, with these settings."""
    config = ServingSettings(model=str(shop.archive), work_dir=tmp_path_factory.mktemp("work"),
                             watch_interval_s=0, **settings)
    with serve_in_thread(create_app(config)) as url:
        yield url


@pytest.fixture(scope="module")
def base_url(shop: SyntheticShop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _served(shop, tmp_path_factory, max_top_k=50)


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        yield http


def expected_two_stage(shop: SyntheticShop, user_id: str, k: int) -> list[str]:
    """The evaluation's way, independently: score the user's DataFrame rows, rank, top up."""
    from components.bundle import load_bundle

    bundle = load_bundle(shop.archive)
    ranker = Ranker.load(bundle.model_path, spec=FeatureSpec.from_dict(bundle.manifest["feature_spec"]))
    popular = PopularFallback(bundle.popular_items, bundle.popular_scores)
    user_idx = shop.user_ids.index(user_id)
    rows = shop.candidates[shop.candidates[s.USER_IDX] == user_idx]
    if rows.empty:
        items, _ = popular.top(k)
    else:
        items, _ = popular.top_up(*rank_top_k(rows[s.ITEM_IDX].to_numpy(), ranker.score(rows), k), k)
    return [shop.item_ids[i] for i in items]


def test_warm_user_gets_ranked_items_equal_to_the_evaluation_path(client: httpx.Client,
                                                                   shop: SyntheticShop) -> None:
    warm = [u for u in shop.user_ids if u not in set(shop.cold_user_ids)][:25]
    for user_id in warm:
        response = client.get("/recommendations", params={"user_id": user_id, "top_k": 10})
        assert response.status_code == 200
        body = response.json()
        assert body["user_id"] == user_id
        assert body["fallback"] is False
        assert body["fallback_reason"] is None
        assert body["model_version"].startswith("20111109-")
        assert [item["item_id"] for item in body["items"]] == expected_two_stage(shop, user_id, 10)
        scores = [item["score"] for item in body["items"]]
        assert scores == sorted(scores, reverse=True)
        assert all(0 <= x <= 1 for x in scores)


def test_unknown_and_cold_users_get_the_popular_list_marked_as_fallback(client: httpx.Client,
                                                                         shop: SyntheticShop) -> None:
    unknown = client.get("/recommendations", params={"user_id": "never-seen", "top_k": 5}).json()
    assert unknown["fallback"] is True
    assert unknown["fallback_reason"] == "unknown_user"
    cold = client.get("/recommendations", params={"user_id": shop.cold_user_ids[0], "top_k": 5}).json()
    assert cold["fallback_reason"] == "no_candidates"
    popular = pd.read_parquet(_unpacked(shop) / s.BUNDLE_POPULAR)
    top5 = [shop.item_ids[i] for i in popular[s.ITEM_IDX].head(5)]
    assert [i["item_id"] for i in unknown["items"]] == top5 == [i["item_id"] for i in cold["items"]]


def _unpacked(shop: SyntheticShop) -> Path:
    from components.bundle.format import extract_bundle

    return extract_bundle(shop.archive)


@pytest.mark.parametrize(("params", "parameter"), [
    ({"user_id": "10000", "top_k": 0}, "top_k"),
    ({"user_id": "10000", "top_k": 51}, "top_k"),
    ({"user_id": "10000", "top_k": "ten"}, "top_k"),
    ({"top_k": 5}, "user_id"),
    ({"user_id": ""}, "user_id"),
    ({"user_id": "10000", "exclude_purchased": "maybe"}, "exclude_purchased"),
    ({"user_id": "10000", "exclude": ",".join(f"x{i}" for i in range(1001))}, "exclude"),  # > 4,000 chars
    ({"user_id": "10000", "exclude": ",".join("x" * 1001)}, "exclude"),  # > 1,000 ids
])
def test_malformed_parameters_get_422_naming_them(client: httpx.Client, params: dict[str, str | int],
                                                  parameter: str) -> None:
    response = client.get("/recommendations", params=params)
    assert response.status_code == 422
    body = response.json()
    assert body["parameter"] == parameter
    assert parameter in body["error"]


def test_filters_exclude_items_purchases_and_other_categories(client: httpx.Client,
                                                              shop: SyntheticShop) -> None:
    user_id = shop.user_ids[0]
    route = "/recommendations"
    plain = [i["item_id"] for i in client.get(route, params={"user_id": user_id}).json()["items"]]
    excluded = client.get(route, params={"user_id": user_id, "exclude": ",".join(plain[:3])}).json()
    listed = [i["item_id"] for i in excluded["items"]]
    assert not set(plain[:3]) & set(listed)
    assert listed[:7] == plain[3:10]

    rows = shop.candidates
    bought = rows.loc[(rows[s.USER_IDX] == 0) & (rows[s.UI_PURCHASE_DAYS] > 0), s.ITEM_IDX]
    assert len(bought) > 0
    fresh = client.get("/recommendations", params={"user_id": user_id, "exclude_purchased": "true",
                                                   "top_k": 40}).json()
    assert not {shop.item_ids[i] for i in bought} & {i["item_id"] for i in fresh["items"]}

    mugs = client.get("/recommendations", params={"user_id": user_id, "category": "mugs", "top_k": 8}).json()
    categories = pd.read_parquet(_unpacked(shop) / s.BUNDLE_ITEMS).set_index(s.ITEM_ID)[s.ITEM_CATEGORY]
    assert len(mugs["items"]) == 8
    assert {categories[i["item_id"]] for i in mugs["items"]} == {"mugs"}
    nothing = client.get("/recommendations", params={"user_id": user_id, "category": "no-such"}).json()
    assert nothing["items"] == []


def test_sagemaker_ping_and_json_invocations(client: httpx.Client, shop: SyntheticShop) -> None:
    assert client.get("/ping").status_code == 200
    single = client.post("/invocations", json={"user_id": shop.user_ids[1], "top_k": 4})
    assert single.status_code == 200
    assert single.headers["content-type"].startswith("application/json")
    assert [i["item_id"] for i in single.json()["items"]] == expected_two_stage(shop, shop.user_ids[1], 4)
    instances = [{"user_id": u} for u in shop.user_ids[:3]]
    batch = client.post("/invocations", json={"instances": instances}).json()
    assert [p["user_id"] for p in batch["predictions"]] == shop.user_ids[:3]
    assert all(len(p["items"]) == 10 for p in batch["predictions"])
    warm = next(u for u in shop.user_ids if u not in set(shop.cold_user_ids))
    numeric_id = client.post("/invocations", json=[{"user_id": int(warm)}]).json()
    assert numeric_id["predictions"][0]["user_id"] == warm
    assert numeric_id["predictions"][0]["fallback"] is False


def test_sagemaker_csv_in_and_out(client: httpx.Client, shop: SyntheticShop) -> None:
    body = f"{shop.user_ids[0]},3\n\n{shop.user_ids[1]}\nnobody,2\n"
    response = client.post("/invocations", content=body,
                           headers={"content-type": "text/csv", "accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert [r[0] for r in rows] == [shop.user_ids[0]] * 3 + [shop.user_ids[1]] * 10 + ["nobody"] * 2
    assert [r[2] for r in rows[:3]] == expected_two_stage(shop, shop.user_ids[0], 3)
    assert rows[-1][4] == "unknown_user"
    assert rows[0][4] == ""
    as_json = client.post("/invocations", content=body, headers={"content-type": "text/csv"}).json()
    assert len(as_json["predictions"]) == 3


@pytest.mark.parametrize(("content", "headers", "status"), [
    (b"{not json", {"content-type": "application/json"}, 422),
    (b'{"user_id": "1", "top_k": 500}', {"content-type": "application/json"}, 422),
    (b'{"user_id": "1", "surprise": 1}', {"content-type": "application/json"}, 422),
    (b'{"instances": []}', {"content-type": "application/json"}, 422),
    (b"[]", {"content-type": "application/json"}, 422),
    (b"u1,abc\n", {"content-type": "text/csv"}, 422),
    (b"u1,1,2\n", {"content-type": "text/csv"}, 422),
    (b"\xff\xfe", {"content-type": "text/csv"}, 422),
    (b"\n\n", {"content-type": "text/csv"}, 422),
    (b"x", {"content-type": "application/x-npy"}, 415),
    (b'{"user_id": "1"}', {"content-type": "application/json", "accept": "image/png"}, 406),
])
def test_bad_invocations_are_4xx_never_5xx(client: httpx.Client, content: bytes, headers: dict[str, str],
                                          status: int) -> None:
    response = client.post("/invocations", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]


def test_health_readiness_and_docs(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["model_version"]
    spec = client.get("/openapi.json").json()
    paths = {"/recommendations", "/invocations", "/ping", "/healthz", "/readyz", "/metrics", "/admin/reload"}
    assert paths <= set(spec["paths"])
    assert client.get("/docs").status_code == 200
    assert client.get("/admin/model").status_code == 403  # no token configured: admin is off


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_move_with_traffic(client: httpx.Client, shop: SyntheticShop) -> None:
    before = client.get("/metrics").text
    route = "/recommendations"
    for user_id in shop.user_ids[:5]:
        client.get(route, params={"user_id": user_id})
    client.get(route, params={"user_id": "ghost"})
    client.get(route, params={"user_id": "10000", "top_k": -1})
    after = client.get("/metrics").text
    requests = mn.REQUESTS_TOTAL
    moved = {
        "ok": _sample(after, requests, route=route, status="200") - _sample(before, requests, route=route,
                                                                           status="200"),
        "422": _sample(after, requests, route=route, status="422") - _sample(before, requests, route=route,
                                                                            status="422"),
        "hist": _sample(after, mn.REQUEST_LATENCY_SECONDS + "_count", route=route, status="200")
        - _sample(before, mn.REQUEST_LATENCY_SECONDS + "_count", route=route, status="200"),
        "fallback": _sample(after, mn.FALLBACK_TOTAL, route=route, reason="unknown_user")
        - _sample(before, mn.FALLBACK_TOTAL, route=route, reason="unknown_user"),
        "considered": _sample(after, mn.CANDIDATES_CONSIDERED_TOTAL)
        - _sample(before, mn.CANDIDATES_CONSIDERED_TOTAL),
    }
    cold = set(shop.cold_user_ids)
    assert moved == {"ok": 6, "422": 1, "hist": 6, "fallback": 1,
                     "considered": 40 * sum(u not in cold for u in shop.user_ids[:5])}
    assert _sample(after, mn.REQUEST_LATENCY_SECONDS + "_bucket", route=route, status="200", le="+Inf") >= 6
    assert _sample(after, mn.MODEL_INFO + "_info") == 1
    assert _sample(after, mn.MODEL_LAST_LOAD_SUCCESS) == 1
    assert _sample(after, mn.MODEL_LOAD_SECONDS) > 0
    assert _sample(after, mn.MODEL_LOADS_TOTAL, result="success") == 1
    assert _sample(after, mn.CATALOG_ITEMS) == len(shop.item_ids)
    assert 0 < _sample(after, mn.ITEMS_SERVED_DISTINCT) <= len(shop.item_ids)
    assert 'route="unmatched"' not in after or client.get("/nope").status_code == 404


def test_fallbacks_are_counted_per_route_as_the_requests_are(client: httpx.Client) -> None:
    """A batch of 7 unknown users is 7 fallbacks of /invocations and none of /recommendations, whose
    fallback share (the dashboard's) divides by /recommendations answers: per route, both sides agree."""
    before = client.get("/metrics").text
    batch = client.post("/invocations", json={"instances": [{"user_id": f"ghost-{i}"} for i in range(7)]})
    assert batch.status_code == 200
    client.get("/recommendations", params={"user_id": "ghost"})  # the fast path
    client.get("/recommendations", params={"user_id": "ghost", "exclude": ""})  # the FastAPI route
    after = client.get("/metrics").text

    def moved(route: str) -> float:
        return (_sample(after, mn.FALLBACK_TOTAL, route=route, reason="unknown_user")
                - _sample(before, mn.FALLBACK_TOTAL, route=route, reason="unknown_user"))

    assert (moved("/invocations"), moved("/recommendations")) == (7, 2)
    answered = (_sample(after, mn.REQUESTS_TOTAL, route="/recommendations", status="200")
                - _sample(before, mn.REQUESTS_TOTAL, route="/recommendations", status="200"))
    assert answered == 2


def test_every_metric_name_is_exported(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    for name in (v for k, v in vars(mn).items() if k.isupper() and isinstance(v, str)):
        exported = name if name != mn.MODEL_INFO else name + "_info"
        assert re.search(rf"^{re.escape(exported)}(_bucket)?[{{ ]", text, re.M), name


def test_category_filter_without_category_attribute_is_422(tmp_path: Path, shop: SyntheticShop) -> None:
    """A bundle whose catalog has no category column answers 422 naming `category`, not 500."""
    from components.bundle.format import load_bundle
    from components.serving.engine import ServingModel, UnknownCategoryAttributeError, score_candidates

    bundle = load_bundle(shop.archive)
    plain = type(bundle)(**{**bundle.__dict__, "items": bundle.items.drop(columns=[s.ITEM_CATEGORY])})
    ranker = Ranker.load(bundle.model_path, spec=FeatureSpec.from_dict(bundle.manifest["feature_spec"]))
    model = ServingModel(plain, score_candidates(plain, ranker), source="test")
    with pytest.raises(UnknownCategoryAttributeError, match="category"):
        model.recommend(shop.user_ids[0], 5, category="mugs")
    assert len(model.recommend(shop.user_ids[0], 5).item_idx) == 5
    assert np.all(np.diff(model.recommend(shop.user_ids[0], 5).scores) <= 0)


def test_serves_an_unpacked_folder_as_sagemaker_mounts_it(shop: SyntheticShop, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """SageMaker unpacks ModelDataUrl into /opt/ml/model; with no ECOMREC_MODEL that folder is served
    (pointed at a temporary folder here) and never deleted."""
    from components.bundle.format import extract_bundle
    from components.serving import settings as settings_module

    folder = extract_bundle(shop.archive, tmp_path / "opt-ml-model")
    monkeypatch.setattr(settings_module, "SAGEMAKER_MODEL_DIR", folder)
    monkeypatch.delenv("ECOMREC_MODEL", raising=False)
    settings = ServingSettings(watch_interval_s=0, work_dir=tmp_path / "work")
    assert settings.initial_model() == str(folder)
    with serve_in_thread(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        assert client.get("/ping").status_code == 200
        body = client.post("/invocations", json={"user_id": shop.user_ids[0], "top_k": 2}).json()
        assert len(body["items"]) == 2
    assert (folder / s.BUNDLE_MANIFEST).is_file()  # the mount is left as it was


def _raw_exchange(base_url: str, head: bytes, body: bytes) -> tuple[bytes, bool]:
    """Send a request head and the first body bytes on a raw socket (nothing more) and return the
    response's first bytes and whether the server closed the connection after answering."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + body)
        answer = sock.recv(65536)  # a server that waits for the declared body times out here
        closed = False
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
            closed = True
    return answer, closed


def test_a_declared_oversized_body_is_refused_before_it_is_read(base_url: str) -> None:
    """400 MB declared, 1 KB sent: the 413 comes at once and the connection is closed, not drained."""
    declared = 400 << 20
    head = (f"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode()
    answer, closed = _raw_exchange(base_url, head, b"x" * 1024)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"parameter":"body"' in answer
    assert closed


async def _drive(app: Any, headers: list[tuple[bytes, bytes]], chunks: Iterator[bytes]) -> tuple[int, int]:
    """Call the ASGI app with a POST /invocations whose body comes from ``chunks``; return the status and
    how many body messages the app pulled."""
    pulled = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/invocations", "raw_path": b"/invocations", "root_path": "",
             "query_string": b"", "headers": [(b"host", b"test"), *headers], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80), "state": {}}
    await app(scope, receive, send)
    return status, pulled


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_an_oversized_body_is_read_no_further_than_the_limit(shop: SyntheticShop, tmp_path: Path,
                                                            declare_length: bool) -> None:
    """At the ASGI level, with 400 one-MB chunks on offer: none is pulled when Content-Length says too
    much; without a length, reading stops at the first chunk over 6 MB."""
    MAX_BODY_BYTES = ServingSettings.model_fields["max_body_bytes"].default

    app = create_app(ServingSettings(model=str(shop.archive), work_dir=tmp_path, watch_interval_s=0))
    chunks = iter([b" " * (1 << 20)] * 400)
    headers = [(b"content-type", b"application/json")]
    if declare_length:
        headers.append((b"content-length", str(400 << 20).encode()))
    status, pulled = anyio.run(_drive, app, headers, chunks)
    assert status == 413
    assert pulled == (0 if declare_length else MAX_BODY_BYTES // (1 << 20) + 1)


def test_a_small_body_with_a_zero_padded_content_length_is_read(shop: SyntheticShop, tmp_path: Path) -> None:
    app = create_app(ServingSettings(model=str(shop.archive), work_dir=tmp_path, watch_interval_s=0))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"0" * 20 + b"2")]
    status, pulled = anyio.run(_drive, app, headers, iter([b"{}"]))
    assert (status, pulled) == (422, 1)  # read and refused for its content (no user_id), not its size


@pytest.fixture(scope="module")
def small_batch_url(shop: SyntheticShop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _served(shop, tmp_path_factory, max_batch=5)


@pytest.mark.parametrize("content_type", ["application/json", "text/csv"])
def test_a_batch_over_max_batch_is_refused_before_its_users_are_validated(small_batch_url: str,
                                                                          content_type: str) -> None:
    """max_batch + 1 users with a malformed last one: the 422 names the batch limit (counted first), not
    the malformed user (which only validating every user would reach)."""
    if content_type == "text/csv":
        body = b"u\n" * 5 + b"u,not-a-number\n"
    else:
        body = orjson.dumps({"instances": [{"user_id": "u"}] * 5 + [{"user_id": ""}]})
    answer = httpx.post(f"{small_batch_url}/invocations", content=body, headers={"content-type": content_type})
    assert answer.status_code == 422, answer.text
    assert answer.json()["parameter"] == "body"
    assert "at most 5 users" in answer.json()["error"]


def test_a_large_body_is_parsed_off_the_event_loop(small_batch_url: str, shop: SyntheticShop,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A big body's parsing (decode, CSV rows, validation) runs in a worker thread: the event loop keeps
    answering health checks meanwhile. Small bodies stay inline."""
    from components.serving.routers import sagemaker

    on_loop: list[bool] = []
    parse = sagemaker._parse

    def spy(*args: Any) -> Any:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # no running loop in this thread: a worker thread
            on_loop.append(False)
        return parse(*args)

    monkeypatch.setattr(sagemaker, "_parse", spy)
    big = b"\n" * (1 << 20) + f"{shop.user_ids[0]}\n".encode()  # a valid 1 MB CSV: one user, blank lines
    for body in (big, f"{shop.user_ids[0]}\n".encode()):
        answer = httpx.post(f"{small_batch_url}/invocations", content=body, headers={"content-type": "text/csv"})
        assert answer.status_code == 200, answer.text
    assert on_loop == [False, True]


@pytest.mark.parametrize(("accept", "answer"), [
    ("text/csv;q=0, application/json", "application/json"),
    ("application/json;q=0, text/csv", "text/csv"),
    ("application/json;q=0.5, text/csv;q=0.9", "text/csv"),
    ("text/csv;q=0.4, application/*;q=0.8", "application/json"),
    ("application/json;q=0, */*", "text/csv"),  # the specific range's q=0 beats the wildcard's q=1
    ("text/csv, application/json", "text/csv"),  # equal q: the first listed
    ("*/*", "application/json"),
    ("TEXT/CSV; Q=1", "text/csv"),
    ("text/csv;q=oops, application/json", "application/json"),  # a malformed q drops its range only
    ("text/csv;q=0", None),
    ("*/*;q=0", None),
    ("image/png", None),
])
def test_invocations_accept_follows_q_values(client: httpx.Client, shop: SyntheticShop, accept: str,
                                             answer: str | None) -> None:
    response = client.post("/invocations", content=f"{shop.user_ids[0]},2\n",
                           headers={"content-type": "text/csv", "accept": accept})
    if answer is None:
        assert response.status_code == 406, response.text
        assert response.json()["parameter"] == "accept"
    else:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].split(";")[0] == answer


@pytest.mark.parametrize(("body", "parameter"), [
    ({"user_id": "u1", "top_k": True}, "top_k"),
    ({"user_id": "u1", "top_k": False}, "top_k"),
    ({"user_id": "u1", "top_k": 2.0}, "top_k"),
    ({"user_id": "u1", "top_k": "2"}, "top_k"),
    ({"instances": [{"user_id": "u1"}, {"user_id": "u2", "top_k": True}]}, "instances.1.top_k"),
    ([{"user_id": "u1", "top_k": True}], "top_k"),
])
def test_invocations_top_k_must_be_a_json_integer(client: httpx.Client, body: Any, parameter: str) -> None:
    """true is not 1: booleans (and floats, strings) are refused for the integer field, named."""
    response = client.post("/invocations", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["parameter"] == parameter
    assert parameter in response.json()["error"]


@pytest.mark.parametrize("top_k", ["\u0663", "1_0", "+3", "3.0", "x"])
def test_invocations_csv_top_k_is_ascii_digits(client: httpx.Client, top_k: str) -> None:
    """int() reads "٣" (an Arabic-Indic three) and "1_0"; a CSV top_k is plain digits or a 422."""
    response = client.post("/invocations", content=f"u1,{top_k}\n".encode(), headers={"content-type": "text/csv"})
    assert response.status_code == 422, response.text
    assert response.json()["parameter"] == "top_k"
