"""Loading the bundle from s3:// against a local S3-protocol server (moto's server mode, a fake of S3
reached over a real socket; boto3 is not patched). The bundle is synthetic but written by write_bundle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from components.serving.app import create_app
from components.serving.settings import ServingSettings
from components.serving.synthetic import SyntheticShop, make_synthetic_bundle
from components.serving.testing import serve_in_thread

BUCKET = "ecomrec-models"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def s3(s3_endpoint: str, aws_env: None) -> Any:
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> SyntheticShop:
    return make_synthetic_bundle(tmp_path_factory.mktemp("s3shop") / "out", n_users=80, n_items=60,
                                 per_user=20)


def test_serves_a_bundle_read_from_s3_with_an_injected_client(s3: Any, shop: SyntheticShop,
                                                              tmp_path: Path) -> None:
    s3.upload_file(str(shop.archive), BUCKET, "runs/1/bundle/model.tar.gz")
    settings = ServingSettings(model=f"s3://{BUCKET}/runs/1/bundle/model.tar.gz", watch_interval_s=0,
                               work_dir=tmp_path / "work")
    with serve_in_thread(create_app(settings, s3_client=s3)) as url, httpx.Client(base_url=url) as client:
        body = client.get("/recommendations", params={"user_id": shop.user_ids[0], "top_k": 3}).json()
        assert len(body["items"]) == 3
        assert body["fallback"] is False
    assert list((tmp_path / "work").iterdir()) == []  # the download and the unpacked copy are gone


def test_s3_prefix_and_endpoint_from_settings(s3: Any, s3_endpoint: str, shop: SyntheticShop,
                                              tmp_path: Path) -> None:
    """A prefix holding model.tar.gz (how a pipeline run lays it out), with the client the app builds
    itself from ECOMREC_S3_ENDPOINT_URL and the usual AWS credential chain."""
    s3.upload_file(str(shop.archive), BUCKET, "runs/2/bundle/model.tar.gz")
    settings = ServingSettings(model=f"s3://{BUCKET}/runs/2/bundle/", s3_endpoint_url=s3_endpoint,
                               watch_interval_s=0, work_dir=tmp_path / "work")
    with serve_in_thread(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        assert client.get("/ping").status_code == 200
        answer = client.post("/invocations", json={"user_id": "nobody"}).json()
        assert answer["fallback_reason"] == "unknown_user"


def test_a_missing_s3_bundle_stops_the_start_up(s3: Any, tmp_path: Path) -> None:
    settings = ServingSettings(model=f"s3://{BUCKET}/nothing/here/model.tar.gz", watch_interval_s=0,
                               work_dir=tmp_path / "work")
    with pytest.raises(RuntimeError, match="stopped during start-up"), serve_in_thread(
            create_app(settings, s3_client=s3)):
        pass
