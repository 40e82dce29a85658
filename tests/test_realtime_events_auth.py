"""POST /events needs a bearer token when one is configured (issue #14: the route is on the internet-facing
ALB): over a real socket, a missing or wrong token is 401 and nothing reaches the log or the store; the
token comes from ECOMREC_EVENTS_TOKEN or a Secrets Manager secret read once at start-up (moto's Secrets
Manager); `ecomrec events send --token` sends it."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import moto
import pytest

from components import schema as s
from components.errors import EcomrecError
from components.realtime.log import log_folder
from components.realtime.store import SqliteStore
from components.serving.app import create_app
from components.serving.settings import ServingSettings
from components.serving.synthetic import SyntheticShop, make_synthetic_bundle
from components.serving.testing import serve_in_thread

TOKEN = "t0ken-of-the-shop-0123456789"
EVENT = {s.USER_ID: "10001", s.ITEM_ID: "SKU-00003", s.EVENT_TYPE: "view", s.TIMESTAMP: "2024-05-01T10:00:00"}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> SyntheticShop:
    return make_synthetic_bundle(tmp_path_factory.mktemp("bundle") / "out", n_users=20, n_items=20, per_user=5)


def settings(shop: SyntheticShop, tmp_path: Path, **extra: Any) -> ServingSettings:
    return ServingSettings(model=str(shop.archive), work_dir=tmp_path / "work", watch_interval_s=0,
                           events_raw_root=tmp_path / "raw", store_path=tmp_path / "store.sqlite", **extra)


@pytest.fixture
def served(shop: SyntheticShop, tmp_path: Path) -> Iterator[str]:
    with serve_in_thread(create_app(settings(shop, tmp_path, events_token=TOKEN))) as url:
        yield url


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}", TOKEN,
                                           f"Bearer {TOKEN}x", "Bearer"])
def test_a_missing_or_wrong_token_is_401_and_nothing_is_logged_or_stored(
        served: str, tmp_path: Path, authorization: str | None) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    response = httpx.post(f"{served}/events", json={"events": [EVENT]}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["parameter"] == "authorization" and "Bearer" in response.json()["error"]
    assert not log_folder(tmp_path / "raw").exists()
    assert SqliteStore(tmp_path / "store.sqlite").user_events("10001") == []


def test_the_right_token_is_accepted(served: str, tmp_path: Path) -> None:
    response = httpx.post(f"{served}/events", json={"events": [EVENT]}, headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == [0]
    assert len(list(log_folder(tmp_path / "raw").rglob("*.csv"))) == 1
    assert len(SqliteStore(tmp_path / "store.sqlite").user_events("10001")) == 1


def test_a_too_short_token_or_both_settings_are_refused_naming_them(shop: SyntheticShop, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="events_token"):
        settings(shop, tmp_path, events_token="short")
    with pytest.raises(ValueError, match="ECOMREC_EVENTS_TOKEN and ECOMREC_EVENTS_TOKEN_SECRET"):
        settings(shop, tmp_path, events_token=TOKEN, events_token_secret="ecomrec/events-token")


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import boto3

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(name, value)
    with moto.mock_aws():
        yield boto3.client("secretsmanager")


def test_the_token_is_read_from_secrets_manager_once_at_start_up(
        shop: SyntheticShop, tmp_path: Path, secrets: Any) -> None:
    """The secret's SecretString is the token (the CDK stack generates a plain string, no JSON template);
    changing it afterwards changes nothing until a restart: it is read once."""
    arn = secrets.create_secret(Name="ecomrec-events-token", SecretString=TOKEN)["ARN"]
    app = create_app(settings(shop, tmp_path, events_token_secret=arn))
    secrets.put_secret_value(SecretId=arn, SecretString="another-token-0123456789")
    with serve_in_thread(app) as url:
        wrong = httpx.post(f"{url}/events", json={"events": [EVENT]})
        right = httpx.post(f"{url}/events", json={"events": [EVENT]}, headers={"authorization": f"Bearer {TOKEN}"})
    assert wrong.status_code == 401 and right.status_code == 200


def test_a_secret_that_cannot_be_read_stops_the_start_naming_the_setting(
        shop: SyntheticShop, tmp_path: Path, secrets: Any) -> None:
    with pytest.raises(EcomrecError, match="ECOMREC_EVENTS_TOKEN_SECRET: cannot read the secret nope"):
        create_app(settings(shop, tmp_path, events_token_secret="nope"))
    secrets.create_secret(Name="empty", SecretString="x")
    with pytest.raises(EcomrecError, match="ECOMREC_EVENTS_TOKEN_SECRET: the secret empty holds no string"):
        create_app(settings(shop, tmp_path, events_token_secret="empty"))


def test_without_a_token_the_route_stays_open_locally(shop: SyntheticShop, tmp_path: Path) -> None:
    with serve_in_thread(create_app(settings(shop, tmp_path))) as url:
        assert httpx.post(f"{url}/events", json={"events": [EVENT]}).status_code == 200


@pytest.mark.parametrize("via", ["option", "env"])
def test_events_send_sends_the_token(served: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     via: str) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    path = tmp_path / "events.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(EVENT))
        writer.writeheader()
        writer.writerow(EVENT)
    command = ["events", "send", str(path), "--url", served]
    refused = CliRunner().invoke(app, command)
    assert refused.exit_code == 1 and "HTTP 401" in refused.output
    if via == "env":
        monkeypatch.setenv("ECOMREC_EVENTS_TOKEN", TOKEN)
    result = CliRunner().invoke(app, command + (["--token", TOKEN] if via == "option" else []))
    assert result.exit_code == 0, result.output
    assert len(SqliteStore(tmp_path / "store.sqlite").user_events("10001")) == 1
