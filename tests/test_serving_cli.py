"""`ecomrec serve` and the service settings: bad options and settings fail at start with a message naming
them; HTTPS with given certificate files works over a real socket (a throwaway self-signed certificate).
The bundle is synthetic (write_bundle, real CatBoost)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from components.serving.settings import ServingSettings
from components.serving.synthetic import SyntheticShop, make_synthetic_bundle

ECOMREC = Path(sys.executable).parent / "ecomrec"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> SyntheticShop:
    return make_synthetic_bundle(tmp_path_factory.mktemp("cli") / "out", n_users=50, n_items=40, per_user=10)


def self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_settings_fail_fast_naming_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="ECOMREC_DEFAULT_TOP_K"):
        ServingSettings(model=str(tmp_path), default_top_k=20, max_top_k=10)
    with pytest.raises(ValidationError, match="ECOMREC_MODEL: no such file"):
        ServingSettings(model=str(tmp_path / "missing.tar.gz"))
    with pytest.raises(ValidationError, match="ECOMREC_REGISTRY_ROOT"):
        ServingSettings(registry_root=tmp_path / "no-registry")
    with pytest.raises(ValidationError, match="no model"):
        ServingSettings()
    monkeypatch.setenv("ECOMREC_MODEL", "s3://bucket/bundle/model.tar.gz")
    monkeypatch.setenv("ECOMREC_MAX_TOP_K", "25")
    settings = ServingSettings()
    assert (settings.model, settings.max_top_k) == ("s3://bucket/bundle/model.tar.gz", 25)
    monkeypatch.setenv("ECOMREC_MAX_TOP_K", "lots")
    with pytest.raises(ValidationError, match="max_top_k"):
        ServingSettings()


@pytest.mark.parametrize(("args", "message"), [
    (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
    (["--tls-cert", "nope.pem", "--tls-key", "nope.key"], "--tls-cert: no such file"),
    (["--port", "70000"], "--port must be within"),
    (["--workers", "0"], "--workers must be >= 1"),
])
def test_serve_rejects_bad_options(shop: SyntheticShop, tmp_path: Path, args: list[str],
                                   message: str) -> None:
    result = subprocess.run([str(ECOMREC), "serve", "--model", str(shop.archive), *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr


def test_serve_with_tls_answers_https(shop: SyntheticShop, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(
        [str(ECOMREC), "serve", "--model", str(shop.archive), "--port", str(port), "--tls-cert", str(cert),
         "--tls-key", str(key)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=url, verify=trust, timeout=5) as client:
            while True:
                assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
                try:
                    ready = client.get("/readyz")
                    if ready.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "no HTTPS answer within 60 s"
                time.sleep(0.2)
            body = client.get("/recommendations", params={"user_id": shop.user_ids[0], "top_k": 2}).json()
            assert len(body["items"]) == 2
        with pytest.raises(httpx.TransportError), httpx.Client(timeout=5) as plain:
            plain.get(f"http://127.0.0.1:{port}/healthz")  # plain HTTP on the TLS port is refused
    finally:
        process.terminate()
        process.communicate(timeout=20)


def test_serve_without_model_follows_the_default_registry(shop: SyntheticShop, tmp_path: Path) -> None:
    """The README's flow: `ecomrec models approve N`, then `ecomrec serve` serves the latest Approved
    version and switches to versions approved later."""
    from components.registry.base import APPROVED
    from components.registry.local import LocalRegistry

    other = make_synthetic_bundle(tmp_path / "other", n_users=50, n_items=40, per_user=10, seed=3, tag="x")
    registry = LocalRegistry(tmp_path / "registry")
    first = registry.register("ecomrec", str(shop.archive), {})
    registry.set_status("ecomrec", first.version, APPROVED)
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "ECOMREC_REGISTRY_ROOT": str(tmp_path / "registry"),
           "ECOMREC_WATCH_INTERVAL_S": "0.3"}
    env.pop("ECOMREC_MODEL", None)
    process = subprocess.Popen([str(ECOMREC), "serve", "--port", str(port)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            def version() -> str | None:
                try:
                    ready = client.get("/readyz")
                except httpx.TransportError:
                    return None
                return str(ready.json()["model_version"]) if ready.status_code == 200 else None

            deadline = time.monotonic() + 60
            while (first_version := version()) is None:
                assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
                assert time.monotonic() < deadline, "not ready within 60 s"
                time.sleep(0.2)
            second = registry.register("ecomrec", str(other.archive), {})
            registry.set_status("ecomrec", second.version, APPROVED)
            while version() == first_version:
                assert time.monotonic() < deadline + 60, "the approved version was not picked up"
                time.sleep(0.2)
            item = client.get("/recommendations", params={"user_id": other.user_ids[0]}).json()["items"][0]
            assert item["item_id"].endswith("x")
    finally:
        process.terminate()
        process.communicate(timeout=20)
