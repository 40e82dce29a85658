"""report.html: the evaluation at a glance (metrics per recommender, candidate recall curve, feature
importance). PNGs are written beside it and embedded, so the HTML also works on its own."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: containers and CI have no display
import matplotlib.pyplot as plt

from components import schema as s

COLORS = {s.POPULAR: "#9aa5b1", s.REPURCHASE: "#e0a458", s.ALS: "#5b8def", s.TWO_STAGE: "#2f9e6b",
          s.TIFU_KNN: "#b5589b", s.ITEMKNN: "#6c5ce7"}
METRIC_LABELS = {"precision": "Precision", "recall": "Recall", "hit_rate": "HitRate", "ndcg": "NDCG",
                 "map": "MAP", "coverage": "Coverage"}


def plot_metrics(evaluation: Mapping[str, Any], path: Path, segment: str = s.WARM) -> None:
    blocks = evaluation["segments"][segment]
    metrics = [m for m in s.METRICS if m != "coverage"]
    fig, axes = plt.subplots(1, len(s.KS), figsize=(6.2 * len(s.KS), 3.8), sharey=True)
    axes_list = list(axes) if len(s.KS) > 1 else [axes]
    width = 0.8 / len(s.RECOMMENDERS)
    for ax, k in zip(axes_list, s.KS, strict=True):
        for j, name in enumerate(s.RECOMMENDERS):
            values = [blocks.get(name, {}).get(s.metric_key(m, k), {}).get("value", 0.0) for m in metrics]
            positions = [i + (j - (len(s.RECOMMENDERS) - 1) / 2) * width for i in range(len(metrics))]
            bars = ax.bar(positions, values, width, label=name, color=COLORS.get(name))
            if name == s.TWO_STAGE:
                ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
        ax.set_xticks(range(len(metrics)), [f"{METRIC_LABELS[m]}@{k}" for m in metrics], fontsize=9)
        ax.set_title(f"K = {k} ({segment} users)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    axes_list[0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_recall_curve(curves: Mapping[str, Sequence[float]], path: Path, ceiling: float | None) -> None:
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    labels = {"ranker": "ordered by the ranker", "als_then_rest": "ordered by ALS (then the other sources)"}
    colors = {"ranker": COLORS[s.TWO_STAGE], "als_then_rest": COLORS[s.ALS]}
    for name, values in curves.items():
        if values:
            ax.plot(range(1, len(values) + 1), values, label=labels.get(name, name), color=colors.get(name))
    for k in s.KS:
        ax.axvline(k, color="#cccccc", lw=0.8, ls="--")
    if ceiling is not None:
        ax.axhline(ceiling, color="#444444", lw=0.8, ls=":", label=f"all candidates: {ceiling:.3f}")
    ax.set_xlabel("N (candidates kept per user)")
    ax.set_ylabel("recall@N (warm users)")
    ax.set_ylim(0, 1)
    ax.set_xscale("log")
    longest = max((len(v) for v in curves.values()), default=1)
    ticks = [n for n in (1, 2, 5, 10, 20, 50, 100, 200, 500) if n <= max(longest, 1)]
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_importance(importance: Mapping[str, float], path: Path, top: int = 25) -> None:
    items = sorted(importance.items(), key=lambda kv: -kv[1])[:top][::-1]
    fig, ax = plt.subplots(figsize=(6.2, max(2.0, 0.24 * len(items) + 0.8)))
    if items:
        ax.barh([name for name, _ in items], [value for _, value in items], color=COLORS[s.TWO_STAGE])
    ax.set_xlabel("PredictionValuesChange")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(blocks: Mapping[str, Any], k: int) -> str:
    metrics = list(s.METRICS)
    head = "".join(f"<th>{METRIC_LABELS[m]}@{k}</th>" for m in metrics)
    values = {m: [blocks.get(n, {}).get(s.metric_key(m, k), {}).get("value") for n in s.RECOMMENDERS]
              for m in metrics}
    # Mark the best value of a column, unless every recommender ties (e.g. cold users: all get popular).
    best = {m: max(v for v in vs if v is not None) if len({v for v in vs if v is not None}) > 1 else None
            for m, vs in values.items()}
    rows = []
    for name in s.RECOMMENDERS:
        block = blocks.get(name, {})
        cells = []
        for m in metrics:
            value = block.get(s.metric_key(m, k), {}).get("value")
            text = "-" if value is None else f"{value:.4f}"
            strong = value is not None and best[m] is not None and value == best[m]
            cells.append(f"<td class='num{' best' if strong else ''}'>{text}</td>")
        rows.append(f"<tr><th scope='row'>{html.escape(name)}</th>{''.join(cells)}</tr>")
    return f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<figure><img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'><figcaption>{html.escape(alt)}</figcaption></figure>"  # noqa: E501


def write_report(evaluation: Mapping[str, Any], curves: Mapping[str, Sequence[float]],
                 importance: Mapping[str, float], training_report: Mapping[str, Any], output: Path) -> Path:
    """Write the PNGs and report.html into ``output``; returns the HTML path."""
    metrics_png, curve_png, importance_png = (output / "metrics.png", output / "candidate_recall.png",
                                              output / "feature_importance.png")
    plot_metrics(evaluation, metrics_png)
    two_stage = evaluation["ranking_metrics"].get(s.TWO_STAGE, {})
    ceiling = two_stage.get("candidate_recall", {}).get("value")
    plot_recall_curve(curves, curve_png, ceiling)
    plot_importance(importance, importance_png)

    headline = evaluation.get("headline", {})
    ratio = headline.get("two_stage_over_best_baseline")
    over_als = headline.get("two_stage_over_als")
    strongest = headline.get("two_stage_over_strongest_baseline")
    new_over_als = headline.get("exclude_purchased", {}).get("two_stage_over_als")
    users = evaluation["users"]
    split = evaluation["split"]
    cards = [
        ("two_stage NDCG@10", f"{headline.get('two_stage', 0.0):.4f}"),
        ("vs best of popular, repurchase", f"{ratio:.2f}x" if ratio else "-"),
        (f"vs the strongest baseline ({headline.get('strongest_baseline', '-')})",
         f"{strongest:.2f}x" if strongest else "-"),
        ("vs als", f"{over_als:.2f}x" if over_als else "-"),
        ("exclude_purchased: vs als", f"{new_over_als:.2f}x" if new_over_als else "-"),
        ("candidate recall", f"{ceiling:.3f}" if ceiling is not None else "-"),
        ("candidates / user", f"{two_stage.get('candidates_per_user', {}).get('value', 0.0):.0f}"),
        ("evaluated users", f"{users['evaluated']:,} ({users['warm']:,} warm)"),
    ]
    card_html = "".join(f"<div class='card'><div class='v'>{html.escape(v)}</div>"
                        f"<div class='l'>{html.escape(label)}</div></div>" for label, v in cards)
    sections = []
    for segment in ("warm", "cold", "all"):
        blocks = evaluation["segments"].get(segment, {})
        if not any(blocks.values()):
            continue
        n = users.get(segment, users.get("evaluated"))
        tables = "".join(_table(blocks, k) for k in s.KS)
        note = ("<p class='note'>Cold users have no history: every recommender serves them the popular list "
                "(the cold-user policy).</p>" if segment == s.COLD else "")
        sections.append(f"<h3>{segment} users ({n:,})</h3>{note}<div class='tables'>{tables}</div>")
    excluded = evaluation.get("exclude_purchased", {})
    if excluded.get("ranking_metrics"):
        sections.append(f"<h3>exclude_purchased (warm users with a new item: {excluded['users']:,})</h3>"
                        f"<p class='note'>{html.escape(excluded.get('note', ''))}</p>"
                        + _table(excluded["ranking_metrics"], min(s.KS)))
    tifu = evaluation.get(s.TIFU_KNN, {})
    if tifu:
        chosen = tifu.get("chosen_on", {})
        sections.append(
            "<h3>tifu_knn settings</h3><p class='note'>"
            + html.escape(", ".join(f"{k} {v}" for k, v in tifu.get("params", {}).items())
                          + f": chosen on the {chosen.get('fold', '?')} fold, {chosen.get('targets', '')}, "
                          + (f"NDCG@10 {chosen['value']:.4f} over {chosen.get('users', 0):,} users"
                             if chosen.get("value") is not None  # None: no user to tune on (a new shop)
                             else "not tuned: no user had both baskets and target purchases, the grid's "
                                  "first values")
                          + "; grid "
                          + ", ".join(f"{k} {v}" for k, v in tifu.get("grid", {}).items())) + "</p>")
    training = "no training report"
    if training_report:
        seconds = training_report.get("seconds")
        training = (f"best iteration {training_report.get('best_iteration', '-')}, "
                    f"{training_report.get('tree_count', '-')} trees, validation "
                    + ", ".join(f"{k} {v:.4f}" for k, v in training_report.get("validation", {}).items())
                    + (f", {seconds} s" if seconds is not None else "")
                    + (f" ({training_report['source']})" if "source" in training_report else ""))
    split_text = ", ".join(f"{k} {v}" for k, v in split.items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ecomrec evaluation</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, Segoe UI, sans-serif; color: #1f2933; margin: 2rem auto;
       max-width: 1320px; padding: 0 1rem; }}
h1 {{ font-size: 1.5rem; margin-bottom: .2rem; }} h2 {{ margin-top: 2rem; border-bottom: 1px solid #e4e7eb; }}
.meta, .note {{ color: #616e7c; }}
.cards {{ display: flex; gap: .8rem; flex-wrap: wrap; margin: 1rem 0; }}
.card {{ background: #f5f7fa; border-radius: 8px; padding: .7rem 1rem; min-width: 150px; }}
.card .v {{ font-size: 1.35rem; font-weight: 600; }} .card .l {{ color: #616e7c; font-size: .85rem; }}
table {{ border-collapse: collapse; margin: .5rem 1.5rem 1rem 0; display: inline-table; }}
th, td {{ padding: .3rem .6rem; border-bottom: 1px solid #e4e7eb; }} thead th {{ font-size: .85rem; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.best {{ font-weight: 700; color: #2f9e6b; }}
.tables {{ display: flex; flex-wrap: wrap; }}
figure {{ display: inline-block; margin: .5rem 1rem .5rem 0; vertical-align: top; }}
figcaption {{ color: #616e7c; font-size: .85rem; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>ecomrec offline evaluation</h1>
<p class="meta">Protocol: EVALUATION.md. Split: {html.escape(split_text)}. Catalog items:
{evaluation['data'].get('catalog_items', 0):,}. Headline = warm users.</p>
<div class="cards">{card_html}</div>
<h2>Metrics</h2>{''.join(sections)}
{_img(metrics_png, "Ranking metrics per recommender (warm users)")}
<h2>Candidates and ranker</h2>
{_img(curve_png, "Candidate recall: recall@N of the test-fold candidate list")}
{_img(importance_png, "Ranker feature importance (top 25)")}
<p class="meta">Ranker training: {html.escape(training)}.</p>
</body></html>
"""
    path = output / s.REPORT_FILE
    path.write_text(page)
    return path
