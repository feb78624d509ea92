"""Figures logged to MLflow: ROC curves, and the AUC-vs-GFLOPs Pareto scatter."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96)
    plt.close(figure)
    return buffer.getvalue()


def roc_png(scores: np.ndarray, labels: np.ndarray, title: str) -> bytes:
    fpr, tpr, _ = roc_curve(labels, scores)
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot(fpr, tpr, lw=2, label=f"AUC = {roc_auc_score(labels, scores):.3f}")
    axes.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="lower right")
    return _png(figure)


def _by_method(points: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for point in points:
        groups.setdefault(point["method"], []).append(point)
    return groups


def _split_stopped(points: list[dict]) -> tuple[list[dict], list[dict]]:
    """Full-budget points, and those successive halving stopped at a rung (plotted apart)."""
    return [p for p in points if not p.get("stopped_at_rung")], [p for p in points if p.get("stopped_at_rung")]


def pareto_png(points: list[dict], front: list[dict], title: str) -> bytes:
    """AUC against GFLOPs: every trial by method, the front as a step line, the baseline starred.
    `points` and `front` hold dicts with gflops, val_auc, method, trial and baseline."""
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    finished, stopped = _split_stopped(points)
    for method, group in _by_method(finished).items():
        axes.scatter([p["gflops"] for p in group], [p["val_auc"] for p in group], label=method.upper(), alpha=0.75)
    if stopped:
        axes.scatter([p["gflops"] for p in stopped], [p["val_auc"] for p in stopped], facecolors="none", edgecolors="grey",
                     label="stopped at a rung (its AUC there)", alpha=0.75)
    if front:
        axes.step([p["gflops"] for p in front], [p["val_auc"] for p in front], where="post", c="black", lw=1.2, label="Pareto front")
    for point in points:
        if point["baseline"]:
            axes.scatter([point["gflops"]], [point["val_auc"]], marker="*", s=220, c="gold", edgecolors="black", zorder=5, label="baseline (ϕ = 0)")
    axes.set(xscale="log", xlabel="GFLOPs per patch (log)", ylabel="val AUC", title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    return _png(figure)


def pareto_html(points: list[dict], front: list[dict], title: str) -> str:
    import plotly.graph_objects as go

    figure = go.Figure()
    finished, stopped = _split_stopped(points)
    groups = [(method.upper(), group, {}) for method, group in _by_method(finished).items()]
    if stopped:
        groups.append(("stopped at a rung", stopped, {"marker": dict(symbol="circle-open", color="grey")}))
    for name, group, style in groups:
        figure.add_trace(go.Scatter(
            x=[p["gflops"] for p in group], y=[p["val_auc"] for p in group], mode="markers", name=name,
            text=[f"trial {p['trial']}" for p in group], hovertemplate="%{text}<br>%{x:.3f} GFLOPs<br>AUC %{y:.4f}", **style,
        ))
    if front:
        figure.add_trace(go.Scatter(
            x=[p["gflops"] for p in front], y=[p["val_auc"] for p in front], mode="lines",
            line_shape="hv", name="Pareto front", line=dict(color="black"),
        ))
    base = [p for p in points if p["baseline"]]
    if base:
        figure.add_trace(go.Scatter(
            x=[base[0]["gflops"]], y=[base[0]["val_auc"]], mode="markers", name="baseline (ϕ = 0)",
            marker=dict(symbol="star", size=16, color="gold", line=dict(color="black", width=1)),
        ))
    figure.update_layout(title=title, xaxis=dict(type="log", title="GFLOPs per patch"), yaxis_title="val AUC")
    return figure.to_html(include_plotlyjs="cdn", full_html=True)
