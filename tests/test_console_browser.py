"""`ecomrec console` driven in headless Chromium (Debian's chromium + chromium-driver, through Selenium)
over a real socket, on the tiny shop's pipeline run (the ``tiny_run`` fixture):

- the registry table lists the registry's versions, with differences against the live one coloured;
- approving from the page changes the status that `ecomrec models list` then shows;
- the explorer shows the same top 10 as the inference service's ``GET /recommendations`` for the same user
  and bundle;
- a form posted from another site is refused.

Selenium is told where chromedriver is (``Service(CHROMEDRIVER)``), so Selenium Manager never runs and
nothing is downloaded (selenium/webdriver/common/driver_finder.py, selenium 4.51: "Skipping Selenium
Manager; path to ... driver specified in Service class"). ECOMREC_SCREENSHOTS=docs writes the README's
screenshots (docs/console-*.png); otherwise they go to the test's temporary folder."""

from __future__ import annotations

import copy
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from components import schema as s
from components.console.security import CSRF_FIELD
from components.registry.local import LocalRegistry
from tests.conftest import REPO

pytestmark = pytest.mark.spark  # tiny_run

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
GROUP = "ecomrec"


def scaled(evaluation: dict[str, Any], factor: float) -> dict[str, Any]:
    """The run's evaluation with every ranking metric scaled (at most 1): a second and third version to compare."""
    out = copy.deepcopy(evaluation)
    for metrics in out["ranking_metrics"].values():
        for value in metrics.values():
            if isinstance(value, dict) and isinstance(value.get("value"), float):
                value["value"] = min(1.0, value["value"] * factor)  # shares stay shares
    return out


@pytest.fixture(scope="module")
def registry_dir(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the run's registry (version 1, registered by the pipeline, now Approved: live) plus two
    versions registered here with the same bundle and its metrics scaled by 0.9 and 1.1."""
    target = tmp_path_factory.mktemp("console") / "registry"
    shutil.copytree(tiny_run.parent / "registry", target)
    registry = LocalRegistry(target)
    first = registry.describe(GROUP, 1)
    for factor in (0.9, 1.1):
        version = registry.register(GROUP, first.model_data_url, scaled(first.metrics, factor),
                                    description=f"test: version 1's metrics x {factor}")
        registry.attach_evaluation(GROUP, version.version, tiny_run / "evaluation")
    registry.set_status(GROUP, 1, "Approved", "live for the console tests")
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "250", "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def console(registry_dir: Path) -> Iterator[str]:
    """`ecomrec console` as a user starts it, in its own process."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "console", "--registry", str(registry_dir),
                                "--port", str(port), "--log-level", "warning"], env=cli_env(), cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, f"ecomrec console exited with {process.returncode}"
            assert time.monotonic() < deadline, "ecomrec console did not start within 60 s"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (`bash .ci/setup --dev` installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000",
                     "--hide-scrollbars", "--lang=en-GB"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return REPO / "docs" if os.environ.get("ECOMREC_SCREENSHOTS") == "docs" else tmp_path_factory.mktemp("shots")


def by_css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def all_by_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def click_and_wait(driver: Any, element: Any) -> None:
    """Click what navigates, and wait for the next page: Selenium's click returns before a form's POST
    and its redirect have replaced the page, so reading at once could read the old one."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    wait = WebDriverWait(driver, 60)
    wait.until(expected_conditions.staleness_of(old))
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


def table_statuses(driver: Any) -> dict[int, str]:
    rows = all_by_css(driver, "#versions tbody tr:not(.live)")
    return {int(row.get_attribute("data-version")): by_css(row, ".status").text for row in rows}


def cli_statuses(registry_dir: Path) -> dict[int, str]:
    """`ecomrec models list` in its own process, as a user runs it; version -> status from its table."""
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "models", "list", "--registry", str(registry_dir)],
                         env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=120, check=True).stdout
    return {int(n): status for n, status in re.findall(r"│\s*(\d+)\s*│\s*(\w+)\s*│", out)}


def test_the_registry_table_lists_the_versions(browser: Any, console: str, registry_dir: Path,
                                               screenshots: Path) -> None:
    browser.get(console + "/registry")
    expected = {v.version: v.status for v in LocalRegistry(registry_dir).list_versions(GROUP)}
    assert table_statuses(browser) == expected
    assert by_css(browser, "#versions tr.live").get_attribute("data-version") == "1"
    ndcg = {int(row.get_attribute("data-version")): all_by_css(row, "td.num")[0]
            for row in all_by_css(browser, "#versions tbody tr:not(.live)")}
    assert "worse" in ndcg[2].get_attribute("class") and ndcg[2].get_attribute("title") == "-10.0% vs live"
    assert "better" in ndcg[3].get_attribute("class") and ndcg[3].get_attribute("title") == "+10.0% vs live"
    browser.save_screenshot(str(screenshots / "console-registry.png"))
    # the evaluation report, one click from the version's page: the copy the register step kept
    browser.get(console + "/registry/1")
    click_and_wait(browser, by_css(browser, "#report-link"))
    assert browser.title == "ecomrec evaluation"
    assert all_by_css(browser, "img[alt^='Ranking metrics']")


def test_approving_from_the_page_shows_in_models_list(browser: Any, console: str, registry_dir: Path) -> None:
    assert cli_statuses(registry_dir)[3] == "PendingManualApproval"
    browser.get(console + "/registry")
    click_and_wait(browser, by_css(browser, "tr[data-version='3']:not(.live) a.approve"))
    assert by_css(browser, "#confirm h1").text == "Approve version 3 of ecomrec?"
    by_css(browser, "input[name='reason']").send_keys("better on every headline metric")
    click_and_wait(browser, by_css(browser, "#confirm-button"))
    assert by_css(browser, "#done").text == "Version 3 is now Approved."
    assert cli_statuses(registry_dir)[3] == "Approved"
    record = LocalRegistry(registry_dir).describe(GROUP, 3)
    assert record.description == "better on every headline metric"
    assert LocalRegistry(registry_dir).events(GROUP)[-1]["detail"]["ModelPackageVersion"] == 3
    browser.get(console + "/registry")
    assert by_css(browser, "#versions tr.live").get_attribute("data-version") == "3"  # the newest Approved


def explorer_rows(driver: Any) -> list[tuple[str, str]]:
    return [(by_css(row, "td.item").text, by_css(row, "td.score").text) for row in all_by_css(driver, "#top tbody tr")]


def bundle_generators(archive: str, user_id: str, items: set[str]) -> dict[str, set[str]]:
    """Which generators proposed each of ``items`` to the user, read straight from the bundle's rows."""
    from components.bundle import load_bundle
    from components.console.explorer import GENERATORS

    bundle = load_bundle(Path(archive))
    user_idx = bundle.user_index[user_id]
    out: dict[str, set[str]] = {}
    for part in bundle.iter_candidate_parts(columns=[flag for _, flag in GENERATORS]):
        for _, row in part[part[s.USER_IDX] == user_idx].iterrows():
            item = str(bundle.item_ids[int(row[s.ITEM_IDX])])
            if item in items:
                out[item] = {name for name, flag in GENERATORS if row[flag] > 0}
    return out


def test_the_explorer_shows_what_get_recommendations_answers(browser: Any, console: str, registry_dir: Path,
                                                             screenshots: Path, tmp_path: Path) -> None:
    from components.serving.app import create_app
    from components.serving.settings import ServingSettings
    from components.serving.testing import serve_in_thread

    version = LocalRegistry(registry_dir).describe(GROUP, 1)
    settings = ServingSettings(model=version.model_data_url, work_dir=tmp_path / "serving", watch_interval_s=0)
    users = ["u003", "u017", "no-such-user"]
    with serve_in_thread(create_app(settings)) as service:
        answers = {u: httpx.get(f"{service}/recommendations", params={"user_id": u, "top_k": 10}).json()
                   for u in users}
    from selenium.webdriver.support.ui import Select

    browser.get(console + "/explorer")
    for user in users:
        field = by_css(browser, "#user-input")
        field.clear()
        field.send_keys(user)
        Select(by_css(browser, "select[name='version']")).select_by_value("1")
        click_and_wait(browser, by_css(browser, "#explore-button"))
        assert by_css(browser, "#result-user").text == user
        answer = answers[user]
        expected = [(item["item_id"], "-" if item["score"] is None else f"{item['score']:.6f}")
                    for item in answer["items"]]
        assert len(expected) == 10
        assert explorer_rows(browser) == expected, user
        assert bool(all_by_css(browser, "#fallback")) == answer["fallback"]
        if user == "u003":
            browser.save_screenshot(str(screenshots / "console-explorer.png"))
            shown = {by_css(row, "td.item").text: set(by_css(row, "td:nth-child(4)").text.split())
                     for row in all_by_css(browser, "#top tbody tr")}
            assert shown == bundle_generators(version.model_data_url, user, set(shown))
            history = all_by_css(browser, "#history tbody tr")
            assert history and all(by_css(row, "td:nth-child(2)").text != "-" for row in history)  # from the bundle


class _AttackerPage(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        body = (f"<!doctype html><title>win a prize</title><form method='post' action='{self.target}'>"
                f"<input type='hidden' name='{CSRF_FIELD}' value='guessed'>"
                "<input type='hidden' name='reason' value='pwned'>"
                "<button id='go' type='submit'>claim</button></form>").encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_cross_site_post_is_refused(browser: Any, console: str, registry_dir: Path) -> None:
    """Another site (localhost:PORT is a different site from 127.0.0.1) posts the reject form while the
    browser holds a console session. Chromium sends Sec-Fetch-Site: cross-site and, the cookie being
    SameSite=Strict, no session token."""
    browser.get(console + "/registry")  # the browser now has the console's session cookie
    before = LocalRegistry(registry_dir).describe(GROUP, 2).status
    _AttackerPage.target = f"{console}/registry/2/reject"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://localhost:{server.server_address[1]}/")
        click_and_wait(browser, by_css(browser, "#go"))
        assert by_css(browser, "#error h1").text == "Refused"
        assert "another site" in by_css(browser, "#error").text
    finally:
        server.shutdown()
        server.server_close()
    assert LocalRegistry(registry_dir).describe(GROUP, 2).status == before
    assert "Rejected" not in [e["detail"]["ModelApprovalStatus"] for e in LocalRegistry(registry_dir).events(GROUP)
                              if e["detail"]["ModelPackageVersion"] == 2]
