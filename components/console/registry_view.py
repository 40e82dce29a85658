"""What the registry pages show: each version's headline metrics beside the live (latest Approved) version,
read from the evaluation.json each version carries (``ModelVersion.metrics``), through the registry port."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from components import schema as s
from components.registry.base import APPROVED, ModelVersion

# Equal within this: a retrain on the same data gives the same metrics up to float noise.
SAME: Final = 1e-9


@dataclass(frozen=True)
class Metric:
    label: str
    path: str  # dotted path into evaluation.json
    fmt: str = "{:.4f}"


def _ranking(recommender: str, metric: str, k: int) -> str:
    return s.metric_json_path(recommender, metric, k)


HEADLINE: Final = (
    *(Metric(f"{label}@10", _ranking(s.TWO_STAGE, metric, 10))
      for metric, label in (("ndcg", "NDCG"), ("recall", "Recall"), ("hit_rate", "HitRate"), ("map", "MAP"),
                            ("coverage", "Coverage"))),
    # two_stage over the strongest of popular, repurchase, tifu_knn and itemknn of the same run: the gate's bar
    Metric("x strongest baseline", "headline.two_stage_over_strongest_baseline", "{:.3f}x"),
    Metric("cand. recall", f"ranking_metrics.{s.TWO_STAGE}.candidate_recall.value", "{:.3f}"),
)


def lookup(evaluation: dict[str, Any], path: str) -> float | None:
    node: Any = evaluation
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    if isinstance(node, bool) or not isinstance(node, int | float) or not math.isfinite(node):
        return None
    return float(node)


@dataclass(frozen=True)
class Cell:
    text: str
    delta: str  # "" when there is nothing to compare with
    tone: str  # "better", "worse", "same" or "" (CSS class: the colour of the difference)
    relative: str = ""  # the difference relative to the live value (the cell's tooltip)


def compare(metric: Metric, value: float | None, live: float | None) -> Cell:
    if value is None:
        return Cell("-", "", "")
    text = metric.fmt.format(value)
    if live is None:
        return Cell(text, "", "")
    diff = value - live
    if abs(diff) <= SAME:
        return Cell(text, "=", "same")
    relative = f"{diff / live:+.1%} vs live" if live else ""
    return Cell(text, f"{diff:+.4f}", "better" if diff > 0 else "worse", relative)  # every metric: higher is better


def window(evaluation: dict[str, Any]) -> str:
    """The data window the version was evaluated on: history before test_start, tested up to end."""
    split = evaluation.get("split")
    if not isinstance(split, dict) or "test_start" not in split:
        return "-"
    start, end = str(split["test_start"])[:10], str(split.get("end", ""))[:10]
    return f"train < {start}, test to {end}" if end else f"train < {start}"


def strongest_baseline(evaluation: dict[str, Any]) -> str:
    """Which baseline the version's two_stage was held against (evaluation.json's gate block), or "-"."""
    headline = evaluation.get("headline")
    name = headline.get("strongest_baseline") if isinstance(headline, dict) else None
    if not isinstance(name, str):
        return "-"
    value = lookup(evaluation, "headline.strongest_baseline_value")
    return f"{name} ({value:.4f} NDCG@10)" if value is not None else name


@dataclass(frozen=True)
class VersionRow:
    version: ModelVersion
    is_live: bool
    window: str
    cells: list[Cell]
    strongest: str = "-"


def live_version(versions: list[ModelVersion]) -> ModelVersion | None:
    """What serving follows: the newest Approved version (the port's ``latest_approved``, from the list)."""
    approved = [v for v in versions if v.status == APPROVED]
    return max(approved, key=lambda v: v.version) if approved else None


def rows(versions: list[ModelVersion], live: ModelVersion | None) -> list[VersionRow]:
    live_values = [lookup(live.metrics, m.path) if live else None for m in HEADLINE]
    out = []
    for version in versions:
        is_live = live is not None and version.version == live.version
        cells = [compare(m, lookup(version.metrics, m.path), None if is_live else lv)
                 for m, lv in zip(HEADLINE, live_values, strict=True)]
        out.append(VersionRow(version, is_live, window(version.metrics), cells, strongest_baseline(version.metrics)))
    return out


@dataclass(frozen=True)
class DetailRow:
    recommender: str
    label: str
    cell: Cell
    live: str


def detail(version: ModelVersion, live: ModelVersion | None) -> list[DetailRow]:
    """Every recommender's every metric at every K: this version beside the live one."""
    out = []
    for recommender in s.RECOMMENDERS:
        for k in s.KS:
            for metric in s.METRICS:
                m = Metric(f"{metric}@{k}", _ranking(recommender, metric, k))
                value = lookup(version.metrics, m.path)
                live_value = lookup(live.metrics, m.path) if live is not None else None
                if value is None and live_value is None:
                    continue
                same_version = live is not None and live.version == version.version
                out.append(DetailRow(recommender, m.label, compare(m, value, None if same_version else live_value),
                                     "-" if live_value is None else m.fmt.format(live_value)))
    return out
