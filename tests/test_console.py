"""The console app over real HTTP (uvicorn on a loopback socket, httpx as the client), without a browser:
error pages, each cross-site check on its own, paging, the report files, the explorer on a synthetic
bundle. The browser-driven tests on a real pipeline run are in test_console_browser.py."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from components import schema as s
from components.console.app import ConsoleConfig, create_console_app
from components.console.reports import LocalReports
from components.console.security import CSRF_COOKIE, CSRF_FIELD
from components.registry.base import ModelVersion
from components.registry.local import LocalRegistry
from components.serving.source import BundleFetcher
from components.serving.testing import serve_in_thread

GROUP = "ecomrec"


def evaluation(ndcg: float) -> dict[str, object]:
    return {"ranking_metrics": {s.TWO_STAGE: {"ndcg_at_10": {"value": ndcg}, "recall_at_10": {"value": 0.5}}},
            "split": {"test_start": "2011-11-09T00:00:00Z", "end": "2011-12-09T12:50:00Z"}}


@pytest.fixture
def registry(tmp_path: Path) -> LocalRegistry:
    return LocalRegistry(tmp_path / "registry")


@pytest.fixture
def dummy_bundle(tmp_path: Path) -> Path:
    path = tmp_path / "model.tar.gz"
    path.write_bytes(b"not a bundle")  # registry pages never open it; the explorer refuses it (tested)
    return path


@pytest.fixture
def console(registry: LocalRegistry, tmp_path: Path) -> Iterator[str]:
    app = create_console_app(registry, LocalReports(registry), BundleFetcher(tmp_path / "work"),
                             ConsoleConfig(group=GROUP, where=str(registry.root)))
    with serve_in_thread(app) as url:
        yield url


def session(url: str) -> tuple[httpx.Client, str]:
    """A client with the console's session cookie, and the token its forms carry."""
    client = httpx.Client(base_url=url, follow_redirects=False)
    page = client.get("/registry/1/approve")
    token = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', page.text)
    assert token is not None, page.text
    assert client.cookies.get(CSRF_COOKIE) == token.group(1)
    return client, token.group(1)


def test_empty_registry_names_the_command_that_creates_the_first_version(console: str) -> None:
    for path in ("/registry", "/explorer"):
        page = httpx.get(console + path)
        assert page.status_code == 200
        assert "No model versions yet" in page.text
        assert "ecomrec pipeline run --local" in page.text


def test_errors_are_pages_not_tracebacks(console: str, registry: LocalRegistry, dummy_bundle: Path) -> None:
    registry.register(GROUP, str(dummy_bundle), evaluation(0.3))
    cases = {"/registry/7": (404, "has no version 7"), "/nowhere": (404, "no such page"),
             "/registry?page_number=x": (422, "page_number"), "/registry/1/promote": (404, "no page"),
             "/registry/1/report/evaluation.json": (404, "no evaluation report file"),
             "/explorer?version=1&user_id=u1": (400, "not a readable model.tar.gz")}
    for path, (status, text) in cases.items():
        page = httpx.get(console + path)
        assert page.status_code == status, path
        assert page.headers["content-type"].startswith("text/html"), path
        assert text in page.text, (path, page.text)
        assert "Traceback" not in page.text


def test_versions_side_by_side_with_the_live_one(console: str, registry: LocalRegistry,
                                                 dummy_bundle: Path) -> None:
    for ndcg in (0.30, 0.25, 0.35):
        registry.register(GROUP, str(dummy_bundle), evaluation(ndcg))
    registry.set_status(GROUP, 1, "Approved")
    page = httpx.get(console + "/registry").text
    rows = {int(n): body for n, body in re.findall(r'<tr data-version="(\d+)" class="[^"]*">(.*?)</tr>', page, re.S)}
    assert sorted(rows) == [1, 2, 3]
    assert 'class="num worse" title="-16.7% vs live">0.2500<small>-0.0500</small>' in rows[2]
    assert 'class="num better" title="+16.7% vs live">0.3500<small>+0.0500</small>' in rows[3]
    assert "train &lt; 2011-11-09" in rows[3]
    assert '<tr class="live" data-version="1">' in page


def test_a_thousand_versions_are_paged(console: str, registry: LocalRegistry, dummy_bundle: Path) -> None:
    for n in range(1, 121):
        registry.register(GROUP, str(dummy_bundle), evaluation(n / 1000))
    page = httpx.get(console + "/registry", params={"page_number": 3, "per_page": 50}).text
    shown = [int(n) for n in re.findall(r'<tr data-version="(\d+)"', page)]
    assert shown == list(range(20, 0, -1))  # newest first: page 3 of 50 holds versions 20..1
    assert "page 3 of 3" in page


def test_report_files_come_from_the_versions_own_copy(console: str, registry: LocalRegistry, dummy_bundle: Path,
                                                      tmp_path: Path) -> None:
    run = tmp_path / "evaluation"
    run.mkdir()
    (run / s.REPORT_FILE).write_text("<html><body>report of run A</body></html>")
    (run / "metrics.png").write_bytes(b"\x89PNG fake")
    (run / "recommendations.parquet").write_bytes(b"not served")
    version = registry.register(GROUP, str(dummy_bundle), evaluation(0.3))
    registry.attach_evaluation(GROUP, version.version, run)
    (run / s.REPORT_FILE).write_text("<html><body>report of a later run B</body></html>")  # the run folder moves on
    report = httpx.get(f"{console}/registry/1/report/report.html")
    assert report.status_code == 200 and "run A" in report.text
    assert "script-src" not in report.headers["content-security-policy"]  # default-src 'none': no script
    assert httpx.get(f"{console}/registry/1/report/metrics.png").headers["content-type"] == "image/png"
    assert httpx.get(f"{console}/registry/1/report/recommendations.parquet").status_code == 404


@pytest.mark.parametrize("attack", ["no token", "wrong token", "cross-site fetch", "foreign origin"])
def test_each_cross_site_check_refuses_on_its_own(console: str, registry: LocalRegistry, dummy_bundle: Path,
                                                  attack: str) -> None:
    """Every other part of the request is valid, so the one check under test is what refuses it."""
    registry.register(GROUP, str(dummy_bundle), evaluation(0.3))
    client, token = session(console)
    form = {CSRF_FIELD: token, "reason": "looks good"}
    headers = {"origin": console, "sec-fetch-site": "same-origin"}
    if attack == "no token":
        del form[CSRF_FIELD]
    elif attack == "wrong token":
        form[CSRF_FIELD] = token[::-1]
    elif attack == "cross-site fetch":
        headers["sec-fetch-site"] = "cross-site"
    else:
        headers["origin"] = "http://evil.example"
    refused = client.post("/registry/1/approve", data=form, headers=headers)
    assert refused.status_code == 403
    assert "refused" in refused.text
    assert registry.describe(GROUP, 1).status == "PendingManualApproval"
    assert [e["detail"]["ModelApprovalStatus"] for e in registry.events(GROUP)] == ["PendingManualApproval"]


def test_a_same_origin_form_changes_the_status_through_the_port(console: str, registry: LocalRegistry,
                                                                dummy_bundle: Path) -> None:
    registry.register(GROUP, str(dummy_bundle), evaluation(0.3))
    client, token = session(console)
    done = client.post("/registry/1/approve", data={CSRF_FIELD: token, "reason": "beats the live one"},
                       headers={"origin": console, "sec-fetch-site": "same-origin"})
    assert done.status_code == 303 and done.headers["location"] == "/registry/1?done=Approved"
    approved = registry.describe(GROUP, 1)
    assert (approved.status, approved.description) == ("Approved", "beats the live one")
    assert registry.events(GROUP)[-1]["detail"]["ModelApprovalStatus"] == "Approved"  # what serving follows
    assert "Version 1 is now <b>Approved</b>" in client.get(done.headers["location"]).text


def test_only_this_machines_names_reach_the_console(console: str) -> None:
    """A DNS-rebound name (attacker.example resolving to 127.0.0.1) would make the page same-origin to
    the attacker; the Host check refuses it before any page is served."""
    assert httpx.get(console + "/registry", headers={"host": "attacker.example"}).status_code == 400
    assert httpx.get(console + "/registry", headers={"host": "localhost"}).status_code == 200


def test_explorer_on_a_synthetic_bundle(registry: LocalRegistry, tmp_path: Path) -> None:
    from components.serving.synthetic import make_synthetic_bundle

    shop = make_synthetic_bundle(tmp_path / "shop", n_users=40, n_items=60, per_user=25, iterations=5)
    registry.register(GROUP, str(shop.archive), evaluation(0.3))
    app = create_console_app(registry, LocalReports(registry), BundleFetcher(tmp_path / "work"))
    with serve_in_thread(app) as url:
        warm = httpx.get(url + "/explorer", params={"user_id": shop.user_ids[0], "k": 5}).text
        cold = httpx.get(url + "/explorer", params={"user_id": "nobody-123", "k": 5}).text
    top = re.search(r'<table class="recs" id="top">(.*?)</table>', warm, re.S)
    everything = re.search(r'<details id="all-candidates">(.*?)</details>', warm, re.S)
    assert top is not None and everything is not None
    top_items = re.findall(r"<td class=\"item\">([^<]+)</td>", top.group(1))
    ranked = re.findall(r"<td class=\"num\">\d+</td><td>([^<]+)</td>", everything.group(1))
    assert len(ranked) == 25 and top_items == ranked[:5]  # the top K is the head of the ranked candidates
    assert "Personal answer: 25 candidates" in warm
    assert 'id="fallback"' in cold and "unknown_user" in cold
    assert cold.count('<span class="gen popular-list">popular list</span>') == 5


def test_only_changed_versions_are_read_again(registry: LocalRegistry, dummy_bundle: Path) -> None:
    """Parsing every version is the pages' main cost at 1,000 versions: after the first page, only the
    versions the registry's event log names are described again; a change made elsewhere (the CLI, the
    pipeline's register step) still shows on the next page."""
    from components.console.versions import VersionList

    calls: list[str] = []

    class Counting(LocalRegistry):
        def list_versions(self, group: str) -> list[ModelVersion]:
            calls.append("list")
            return super().list_versions(group)

        def describe(self, group: str, version: int) -> ModelVersion:
            calls.append(f"describe {version}")
            return super().describe(group, version)

    for ndcg in (0.3, 0.31, 0.32):
        registry.register(GROUP, str(dummy_bundle), evaluation(ndcg))
    versions = VersionList(Counting(registry.root), GROUP)
    assert [v.status for v in versions.get()] == ["PendingManualApproval"] * 3
    versions.get()
    assert calls == ["list"]
    registry.set_status(GROUP, 2, "Approved")  # another process: the console is not told
    assert [v.status for v in versions.get()] == ["PendingManualApproval", "Approved", "PendingManualApproval"]
    registry.register(GROUP, str(dummy_bundle), evaluation(0.4))
    assert [v.version for v in versions.get()] == [1, 2, 3, 4]
    assert calls == ["list", "describe 2", "describe 4"]


def test_a_registry_without_a_change_log_is_listed_again_after_its_ttl(registry: LocalRegistry,
                                                                 dummy_bundle: Path) -> None:
    from components.console.versions import VersionList

    class Plain:  # the port's methods only, as SageMakerRegistry has
        list_versions = registry.list_versions

    registry.register(GROUP, str(dummy_bundle), evaluation(0.3))
    versions = VersionList(Plain(), GROUP, ttl_s=3600)  # type: ignore[arg-type]
    assert len(versions.get()) == 1
    registry.register(GROUP, str(dummy_bundle), evaluation(0.3))
    assert len(versions.get()) == 1  # within the TTL
    versions.invalidate()  # the console's own change, or "re-read the registry"
    assert len(versions.get()) == 2


def test_with_sagemaker_the_console_reads_and_approves_through_the_model_registry(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`ecomrec console --sagemaker` wiring against moto's SageMaker and S3 (moto stands in for AWS, as in
    test_sagemaker_registry.py): metrics from the evaluation.json the package's ModelMetrics points to,
    the report beside it (the evaluation step writes both into one S3 folder), approval recorded by
    UpdateModelPackage."""
    import boto3
    from moto import mock_aws

    from components.console.reports import S3Reports
    from components.registry.base import BUNDLE_SHA256_METADATA
    from components.registry.sagemaker import SageMakerRegistry

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        sm, s3 = boto3.client("sagemaker", region_name="eu-west-1"), boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="shop", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        s3.put_object(Bucket="shop", Key="runs/7/evaluation/evaluation.json", Body=json.dumps(evaluation(0.31)))
        s3.put_object(Bucket="shop", Key="runs/7/evaluation/report.html", Body=b"<html>report of run 7</html>")
        bundle = b"the bundle's bytes"
        s3.put_object(Bucket="shop", Key="runs/7/bundle/model.tar.gz", Body=bundle)
        sm.create_model_package_group(ModelPackageGroupName=GROUP)
        sm.create_model_package(  # as registration makes it: approval checks the bundle's digest (issue 13)
            ModelPackageGroupName=GROUP, ModelApprovalStatus="PendingManualApproval",
            CustomerMetadataProperties={BUNDLE_SHA256_METADATA: hashlib.sha256(bundle).hexdigest()},
            InferenceSpecification={"Containers": [{"Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/i:1",
                                                    "ModelDataUrl": "s3://shop/runs/7/bundle/model.tar.gz"}],
                                    "SupportedContentTypes": ["application/json"],
                                    "SupportedResponseMIMETypes": ["application/json"]},
            ModelMetrics={"ModelQuality": {"Statistics": {
                "ContentType": "application/json", "S3Uri": "s3://shop/runs/7/evaluation/evaluation.json"}}})
        registry = SageMakerRegistry(sm, s3)
        app = create_console_app(registry, S3Reports(s3), BundleFetcher(tmp_path / "work", s3_client=s3),
                                 ConsoleConfig(group=GROUP, where="SageMaker Model Registry (eu-west-1)"))
        with serve_in_thread(app) as url:
            listing = httpx.get(url + "/registry").text
            assert re.search(r'<tr data-version="1".*?0\.3100', listing, re.S)
            assert "report of run 7" in httpx.get(url + "/registry/1/report/report.html").text
            client, token = session(url)
            done = client.post("/registry/1/approve", data={CSRF_FIELD: token},
                               headers={"origin": url, "sec-fetch-site": "same-origin"})
            assert done.status_code == 303
        arn = sm.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"][0]["ModelPackageArn"]
        assert sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Approved"


def test_changes_since_reads_whole_lines_and_notices_a_replaced_log(registry: LocalRegistry,
                                                                    dummy_bundle: Path) -> None:
    assert registry.changes_since(GROUP, 0) == (0, set())
    registry.register(GROUP, str(dummy_bundle), evaluation(0.3))
    offset, changed = registry.changes_since(GROUP, 0) or (0, set())
    assert changed == {1}
    log = registry.root / GROUP / "events.jsonl"
    with log.open("a") as handle:  # another process is half-way through appending a line
        handle.write('{"detail-type": "SageMaker Model Package State Change", "detail": {"ModelPackageVer')
    assert registry.changes_since(GROUP, offset) == (offset, set())
    log.write_text("")  # the registry folder was replaced
    assert registry.changes_since(GROUP, offset) is None


def test_the_strongest_baseline_and_the_new_peers_are_shown(console: str, registry: LocalRegistry,
                                                            dummy_bundle: Path) -> None:
    """An evaluation.json as issue 17 writes it (components/evaluation/evaluate.py): two_stage's ratio to the
    strongest of the four baselines is in the headline beside the live version's, with that baseline named,
    and tifu_knn / itemknn are in the every-metric table."""
    def with_peers(ndcg: float, tifu: float) -> dict[str, object]:
        doc = evaluation(ndcg)
        ranking = doc["ranking_metrics"]
        assert isinstance(ranking, dict)
        ranking[s.TIFU_KNN] = {"ndcg_at_10": {"value": tifu}}
        ranking[s.ITEMKNN] = {"ndcg_at_10": {"value": 0.1}}
        doc["headline"] = {"two_stage_over_best_baseline": 2.0, "strongest_baseline": s.TIFU_KNN,
                           "strongest_baseline_value": tifu, "two_stage_over_strongest_baseline": ndcg / tifu}
        return doc

    registry.register(GROUP, str(dummy_bundle), with_peers(0.30, 0.25))
    registry.register(GROUP, str(dummy_bundle), with_peers(0.30, 0.32))
    registry.set_status(GROUP, 1, "Approved")
    page = httpx.get(console + "/registry").text
    assert "x strongest baseline" in page
    row = re.search(r'<tr data-version="2" class="[^"]*">(.*?)</tr>', page, re.S)
    assert row is not None
    assert 'class="num worse" title="-21.9% vs live">0.938x<small>-0.2625</small>' in row.group(1)
    version = httpx.get(console + "/registry/2").text
    assert '<dd id="strongest">tifu_knn (0.3200 NDCG@10)</dd>' in version
    assert f"<td>{s.TIFU_KNN}</td><td>ndcg@10</td>" in version and f"<td>{s.ITEMKNN}</td>" in version
