"""The local registry keeps SageMaker Model Registry semantics: numbered versions, statuses, events."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from components.config import GateConfig, PipelineConfig
from components.errors import QualityGateError, RegistryError
from components.registry.gate import baseline_comparison, check_gate
from components.registry.local import STATE_CHANGE_DETAIL_TYPE, LocalRegistry
from pipelines.cli import app


def _evaluation(two_stage: float, als: float, **peers: float) -> dict[str, Any]:
    """evaluation.json's gate inputs: ranking_metrics and the gate block the evaluation step derives from them."""
    ranking = {name: {"ndcg_at_10": {"value": value}}
               for name, value in {"two_stage": two_stage, "als": als, "popular": 0.01, **peers}.items()}
    return {"ranking_metrics": ranking, "gate": baseline_comparison(ranking)}


@pytest.fixture
def bundle_file(tmp_path: Path) -> Path:
    path = tmp_path / "bundle" / "model.tar.gz"
    path.parent.mkdir()
    path.write_bytes(b"bundle-v1")
    return path


def test_register_numbers_versions_and_copies_the_artifact(tmp_path: Path, bundle_file: Path) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    first = registry.register("shop", str(bundle_file), _evaluation(0.3, 0.2))
    bundle_file.write_bytes(b"bundle-v2")  # a later run overwrites its output ...
    second = registry.register("shop", str(bundle_file), _evaluation(0.4, 0.2))
    assert (first.version, second.version) == (1, 2)
    assert first.status == second.status == "PendingManualApproval"
    # ... but what was registered stays what was measured
    assert Path(first.model_data_url).read_bytes() == b"bundle-v1"
    assert Path(second.model_data_url).read_bytes() == b"bundle-v2"
    assert [v.version for v in registry.list_versions("shop")] == [1, 2]
    assert registry.latest_approved("shop") is None


def test_approve_reject_flow_and_events(tmp_path: Path, bundle_file: Path) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    for _ in range(3):
        registry.register("shop", str(bundle_file), {})
    registry.set_status("shop", 1, "Approved")
    registry.set_status("shop", 2, "Approved")
    assert registry.latest_approved("shop").version == 2  # type: ignore[union-attr]
    registry.set_status("shop", 2, "Rejected", reason="bad canary")
    assert registry.latest_approved("shop").version == 1  # type: ignore[union-attr]
    assert registry.describe("shop", 2).description == "bad canary"
    registry.set_status("shop", 1, "Approved")  # no-op: no event
    events = registry.events("shop")
    assert [e["detail"]["ModelApprovalStatus"] for e in events] == [
        "PendingManualApproval", "PendingManualApproval", "PendingManualApproval",
        "Approved", "Approved", "Rejected"]
    assert {e["detail-type"] for e in events} == {STATE_CHANGE_DETAIL_TYPE}


def test_errors_name_what_is_wrong(tmp_path: Path, bundle_file: Path) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    registry.register("shop", str(bundle_file), {})
    with pytest.raises(RegistryError, match="no version 7"):
        registry.describe("shop", 7)
    with pytest.raises(RegistryError, match="unknown approval status"):
        registry.set_status("shop", 1, "Maybe")  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="no such bundle"):
        registry.register("shop", str(tmp_path / "missing.tar.gz"), {})
    with pytest.raises(RegistryError, match="invalid model package group"):
        registry.list_versions("../escape")


def test_concurrent_registrations_get_distinct_versions(tmp_path: Path, bundle_file: Path) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    threads = [threading.Thread(target=registry.register, args=("shop", str(bundle_file), {}))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [v.version for v in registry.list_versions("shop")] == list(range(1, 9))


def test_gate_passes_and_fails_with_reasons() -> None:
    gate = GateConfig(ndcg_at_10_floor=0.1, must_beat_als=True)
    assert check_gate(_evaluation(0.3, 0.2), gate).passed
    verdict = check_gate(_evaluation(0.05, 0.2), gate)
    assert not verdict.passed
    assert any("below the floor" in r for r in verdict.reasons)
    assert any("does not beat als" in r for r in verdict.reasons)
    assert check_gate(_evaluation(0.2, 0.3), GateConfig(ndcg_at_10_floor=0.1, must_beat_als=False)).passed
    with pytest.raises(QualityGateError, match=r"ranking_metrics\.two_stage\.ndcg_at_10\.value"):
        check_gate({"ranking_metrics": {}}, gate)


def test_gate_compares_with_the_strongest_baseline_of_the_run() -> None:
    gate = GateConfig(ndcg_at_10_floor=0.0, must_beat_als=False)
    evaluation = _evaluation(0.30, 0.2, repurchase=0.28, tifu_knn=0.32, itemknn=0.25)
    assert evaluation["gate"]["strongest_baseline"] == "tifu_knn"
    verdict = check_gate(evaluation, gate)
    assert not verdict.passed
    assert verdict.strongest_baseline == "tifu_knn"
    assert verdict.two_stage_over_strongest_baseline == pytest.approx(0.30 / 0.32)
    assert verdict.reasons == ["baseline tifu_knn (0.3200 ndcg_at_10) leads by 0.0200: two_stage (0.3000) is "
                               "0.938x it, the gate needs >= 1.000x (baseline_margin 0.0)"]
    # equal is "not worse"; a margin asks for a lead; the check can be switched off
    assert check_gate(_evaluation(0.32, 0.2, tifu_knn=0.32), gate).passed
    margin = GateConfig(ndcg_at_10_floor=0.0, must_beat_als=False, baseline_margin=0.05)
    assert not check_gate(_evaluation(0.33, 0.2, tifu_knn=0.32), margin).passed
    assert check_gate(_evaluation(0.34, 0.2, tifu_knn=0.32), margin).passed
    off = GateConfig(ndcg_at_10_floor=0.0, must_beat_als=False, must_beat_baselines=False)
    assert check_gate(evaluation, off).passed
    # an evaluation.json without the gate block cannot pass silently
    with pytest.raises(QualityGateError, match=r"gate\.two_stage_over_strongest_baseline"):
        check_gate({"ranking_metrics": evaluation["ranking_metrics"]}, gate)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("baseline_margin", -0.05, "greater than or equal to 0"),
    ("baseline_margin", float("nan"), "finite number"),
    ("baseline_margin", "NaN", "finite number"),
    ("ndcg_at_10_floor", float("nan"), "finite number"),
])
def test_gate_settings_refuse_a_negative_or_nan_margin_naming_the_field(field: str, value: object,
                                                                        message: str) -> None:
    with pytest.raises(ValidationError, match=rf"(?s)gate\.{field}\n.*{message}"):
        PipelineConfig.model_validate({"gate": {field: value}})


def test_models_cli_lists_approves_and_rejects(tmp_path: Path, bundle_file: Path) -> None:
    root = tmp_path / "registry"
    LocalRegistry(root).register("ecomrec", str(bundle_file), _evaluation(0.4321, 0.2))
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list", "--registry", str(root)])
    assert listed.exit_code == 0, listed.output
    assert "PendingManualApproval" in listed.output and "0.4321" in listed.output
    approved = runner.invoke(app, ["models", "approve", "1", "--registry", str(root)])
    assert approved.exit_code == 0 and "Approved" in approved.output
    described = runner.invoke(app, ["models", "describe", "1", "--registry", str(root)])
    assert json.loads(described.output)["status"] == "Approved"
    rejected = runner.invoke(app, ["models", "reject", "1", "--reason", "regression", "--registry", str(root)])
    assert rejected.exit_code == 0 and "Rejected" in rejected.output
    missing = runner.invoke(app, ["models", "approve", "9", "--registry", str(root)])
    assert missing.exit_code == 1 and "no version 9" in missing.output


def test_registration_records_the_digest_and_approval_refuses_a_substitute(tmp_path: Path,
                                                                          bundle_file: Path) -> None:
    """Finding 5: overwriting a registered artifact, then approving, served the substitute."""
    import hashlib

    registry = LocalRegistry(tmp_path / "registry")
    version = registry.register("shop", str(bundle_file), {})
    assert version.bundle_sha256 == hashlib.sha256(b"bundle-v1").hexdigest()
    Path(version.model_data_url).write_bytes(b"a substitute")
    with pytest.raises(RegistryError, match="changed since registration"):
        registry.set_status("shop", 1, "Approved")
    assert registry.describe("shop", 1).status == "PendingManualApproval"
    assert registry.events("shop")[-1]["detail"]["ModelApprovalStatus"] == "PendingManualApproval"
    with pytest.raises(RegistryError, match="expected"):
        registry.register("shop", str(bundle_file), {}, bundle_sha256="0" * 64)


def test_a_corrupt_or_mistyped_record_is_skipped_with_a_warning_naming_it(
        tmp_path: Path, bundle_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Finding 8: one bad file stopped the watcher for the whole group and made `models list` print a
    traceback."""
    root = tmp_path / "registry"
    registry = LocalRegistry(root)
    registry.register("ecomrec", str(bundle_file), _evaluation(0.4321, 0.2))
    registry.set_status("ecomrec", 1, "Approved")
    versions = root / "ecomrec" / "versions"
    (versions / "2.json").write_text("{not json")
    record = json.loads((versions / "1.json").read_text())
    (versions / "3.json").write_text(json.dumps({**record, "version": "3"}))  # a string: mistyped
    (versions / "4.json").write_text(json.dumps({**record, "version": 4, "status": "Live"}))
    (versions / "notes.json").write_text("{}")
    assert [v.version for v in registry.list_versions("ecomrec")] == [1]
    warned = " ".join(r.getMessage() for r in caplog.records)
    for name in ("2.json", "3.json", "4.json", "notes.json"):
        assert str(versions / name) in warned
    assert registry.latest_approved("ecomrec").version == 1  # type: ignore[union-attr]
    assert registry.register("ecomrec", str(bundle_file), {}).version == 5
    listed = CliRunner().invoke(app, ["models", "list", "--registry", str(root)])
    assert listed.exit_code == 0 and listed.exception is None, listed.output
    assert "0.4321" in listed.output
    described = CliRunner().invoke(app, ["models", "describe", "2", "--registry", str(root)])
    assert described.exit_code == 1 and "corrupt registry record" in described.output


def test_a_vanished_registry_is_an_error_not_nothing_approved(tmp_path: Path, bundle_file: Path) -> None:
    root = tmp_path / "registry"
    LocalRegistry(root).register("ecomrec", str(bundle_file), {})
    root.rename(tmp_path / "moved")
    with pytest.raises(RegistryError, match="does not exist"):
        LocalRegistry(root).latest_approved("ecomrec")
