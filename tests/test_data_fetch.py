"""The official download, over real HTTP on 127.0.0.1 (http.server in a thread): no internet needed."""

from __future__ import annotations

import hashlib
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from components import schema as s
from components.data import online_retail as orx
from components.data.fetch import (
    OFFICIAL_FILENAME,
    FetchError,
    default_cache_dir,
    fetch_online_retail,
)
from components.data.online_retail import ensure_online_retail, find_online_retail, import_online_retail


class _Server:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "no such file")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def zip_bytes(tmp_path: Path) -> bytes:
    """A small stand-in for online+retail.zip: a zip holding 'Online Retail.xlsx' with the 8 columns."""
    xlsx = tmp_path / "Online Retail.xlsx"
    pd.DataFrame({
        "InvoiceNo": [536365, "C536379"], "StockCode": ["85123A", "85123A"],
        "Description": ["WHITE HANGING HEART T-LIGHT HOLDER"] * 2, "Quantity": [6, -1],
        "InvoiceDate": pd.to_datetime(["2010-12-01 08:26", "2010-12-01 09:41"]), "UnitPrice": [2.55, 2.55],
        "CustomerID": [17850.0, 17850.0], "Country": ["United Kingdom"] * 2,
    }).to_excel(xlsx, index=False, engine="openpyxl")
    archive = tmp_path / "built.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(xlsx, "Online Retail.xlsx")
    return archive.read_bytes()


@pytest.fixture
def server(zip_bytes: bytes) -> Iterator[_Server]:
    srv = _Server({"/static/public/352/online+retail.zip": zip_bytes})
    yield srv
    srv.close()


def test_download_verifies_and_reuses(server: _Server, zip_bytes: bytes, tmp_path: Path) -> None:
    url = server.url + "/static/public/352/online+retail.zip"
    digest = hashlib.sha256(zip_bytes).hexdigest()
    path = fetch_online_retail(tmp_path / "cache", url=url, sha256=digest, progress=False)
    assert path == tmp_path / "cache" / OFFICIAL_FILENAME
    assert path.read_bytes() == zip_bytes
    assert not list((tmp_path / "cache").glob("*.part"))
    assert len(server.requests) == 1

    again = fetch_online_retail(tmp_path / "cache", url=url, sha256=digest, progress=False)
    assert again == path
    assert len(server.requests) == 1  # a verified copy is not downloaded again

    report = import_online_retail(path, tmp_path / "raw")  # the downloaded zip imports as is
    assert (report.source_format, report.events_out, report.returns) == ("zip", 2, 1)
    assert pd.read_parquet(tmp_path / "raw" / s.EVENTS)[s.USER_ID].tolist() == ["17850", "17850"]


def test_checksum_mismatch_deletes_the_download(server: _Server, zip_bytes: bytes, tmp_path: Path) -> None:
    url = server.url + "/static/public/352/online+retail.zip"
    wrong = "0" * 64
    with pytest.raises(FetchError) as info:
        fetch_online_retail(tmp_path / "cache", url=url, sha256=wrong, progress=False)
    message = str(info.value)
    assert wrong in message
    assert hashlib.sha256(zip_bytes).hexdigest() in message
    assert list((tmp_path / "cache").iterdir()) == []


def test_existing_file_with_a_wrong_checksum_is_replaced(server: _Server, zip_bytes: bytes,
                                                         tmp_path: Path) -> None:
    url = server.url + "/static/public/352/online+retail.zip"
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / OFFICIAL_FILENAME).write_bytes(b"truncated")
    digest = hashlib.sha256(zip_bytes).hexdigest()
    path = fetch_online_retail(tmp_path / "dl", url=url, sha256=digest, progress=False)
    assert path.read_bytes() == zip_bytes
    assert len(server.requests) == 1


def test_http_error_names_the_url(server: _Server, tmp_path: Path) -> None:
    url = server.url + "/static/public/352/moved.zip"
    with pytest.raises(FetchError, match=r"moved\.zip.*404"):
        fetch_online_retail(tmp_path / "dl", url=url, progress=False)
    assert list((tmp_path / "dl").iterdir()) == []


def test_unreachable_host(tmp_path: Path) -> None:
    srv = _Server({})
    url = srv.url + "/online+retail.zip"
    srv.close()  # nothing listens on that port any more
    with pytest.raises(FetchError, match="failed"):
        fetch_online_retail(tmp_path, url=url, progress=False)


def test_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "ecomrec" / "online-retail"


def test_ensure_downloads_once_into_the_cache_then_finds_it(server: _Server, zip_bytes: bytes, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(orx, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(orx.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_online_retail() is None  # nothing local: ensure must download
    url = server.url + "/static/public/352/online+retail.zip"
    digest = hashlib.sha256(zip_bytes).hexdigest()
    path = ensure_online_retail(url=url, sha256=digest, progress=False)
    assert path == default_cache_dir() / OFFICIAL_FILENAME
    assert find_online_retail() == path
    assert ensure_online_retail(url=url, sha256=digest, progress=False) == path
    assert len(server.requests) == 1
