"""The local Spark session's JIT choice: C1 alone for small inputs (short jobs), the full JIT for large ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.errors import EcomrecError
from components.spark import FULL_JIT_MIN_INPUT_BYTES, _local_jit_options, local_input_bytes

C1_ONLY = "-XX:TieredStopAtLevel=1"


@pytest.mark.parametrize(("size", "expected"), [
    (None, C1_ONLY), (0, C1_ONLY), (FULL_JIT_MIN_INPUT_BYTES - 1, C1_ONLY), (FULL_JIT_MIN_INPUT_BYTES, ""),
])
def test_auto_picks_the_jit_from_the_input_size(monkeypatch: pytest.MonkeyPatch, size: int | None,
                                                expected: str) -> None:
    monkeypatch.delenv("ECOMREC_SPARK_JIT", raising=False)
    assert _local_jit_options("local[2]", size) == expected


def test_the_environment_overrides_the_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECOMREC_SPARK_JIT", "c1")
    assert _local_jit_options("local[2]", 10 * FULL_JIT_MIN_INPUT_BYTES) == C1_ONLY
    monkeypatch.setenv("ECOMREC_SPARK_JIT", "full")
    assert _local_jit_options("local[2]", 0) == ""
    monkeypatch.setenv("ECOMREC_SPARK_JIT", "fast")
    with pytest.raises(EcomrecError, match="ECOMREC_SPARK_JIT='fast'"):
        _local_jit_options("local[2]", 0)


def test_local_input_bytes_counts_files_below_a_directory(tmp_path: Path) -> None:
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "part-0.parquet").write_bytes(b"x" * 100)
    (tmp_path / "items.csv").write_bytes(b"y" * 20)
    assert local_input_bytes(tmp_path) == 120
    assert local_input_bytes(tmp_path / "missing") == 0
