"""Views logged to MLflow: ROC curves, and the AUC-vs-GFLOPs Pareto view as a PNG, as a
self-contained HTML page and as a Markdown table."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator
from sklearn.metrics import roc_auc_score, roc_curve

BASELINE_NAME = "baseline (ϕ = 0)"
STOPPED_NAME = "stopped at a rung (its AUC there)"
STOPPED_COLOUR = "grey"
CONFIRMED_NAME = "confirmed: mean ± sd over seeds, and their front"
CONFIRMED_COLOUR = "#2ca02c"

Point = dict[str, Any]  # a trial as the Pareto views show it (`publisher._point`)


def _png(figure: Figure) -> bytes:
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


def _by_method(points: list[Point]) -> dict[str, list[Point]]:
    groups: dict[str, list[Point]] = {}
    for point in points:
        groups.setdefault(point["method"], []).append(point)
    return groups


def _split_stopped(points: list[Point]) -> tuple[list[Point], list[Point]]:
    """Full-budget points, and those successive halving stopped at a rung (plotted apart)."""
    return [p for p in points if not p.get("stopped_at_rung")], [p for p in points if p.get("stopped_at_rung")]


def _colours(points: list[Point]) -> dict[str, str]:
    """A colour per method, in the order the methods first appear: alike in the PNG and the HTML."""
    tab10 = matplotlib.colormaps["tab10"]
    palette = [to_hex(tab10(index)) for index in range(tab10.N)]
    return {method: palette[index % len(palette)] for index, method in enumerate(_by_method(points))}


def _confirmed(points: list[Point]) -> list[Point]:
    """The points trained over more seeds, by GFLOPs: drawn at their mean val AUC ± sd."""
    return sorted((p for p in points if p.get("mean_val_auc") is not None and p["confirmed"]), key=lambda p: p["gflops"])


def _confirmed_front(points: list[Point]) -> list[Point]:
    """The confirmed front's points, by GFLOPs, each with `front_auc`: its mean val AUC, or its
    own where it has one seed (the baseline, as it is)."""
    on_front = sorted((p for p in points if p.get("confirmed_front")), key=lambda p: p["gflops"])
    return [p | {"front_auc": p["val_auc"] if p["mean_val_auc"] is None else p["mean_val_auc"]} for p in on_front]


def pareto_png(points: list[Point], front: list[Point], title: str) -> bytes:
    """AUC against GFLOPs: every trial by method and labelled with its number, the front as a
    step line, the baseline starred; confirmed points at their mean ± sd over seeds, their front
    dashed. `points` and `front` hold dicts with gflops, val_auc, method, trial and baseline (and
    the confirmed ones mean_val_auc, val_auc_sd, confirmed, confirmed_front)."""
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    finished, stopped = _split_stopped(points)
    colours = _colours(points)
    for method, group in _by_method(finished).items():
        axes.scatter([p["gflops"] for p in group], [p["val_auc"] for p in group], c=colours[method], label=method.upper(), alpha=0.75)
    if stopped:
        axes.scatter(
            [p["gflops"] for p in stopped],
            [p["val_auc"] for p in stopped],
            facecolors="none",
            edgecolors=STOPPED_COLOUR,
            label=STOPPED_NAME,
            alpha=0.75,
        )
    if front:
        axes.step([p["gflops"] for p in front], [p["val_auc"] for p in front], where="post", c="black", lw=1.2, label="Pareto front")
    if confirmed := _confirmed(points):
        axes.errorbar(
            [p["gflops"] for p in confirmed],
            [p["mean_val_auc"] for p in confirmed],
            yerr=[p["val_auc_sd"] for p in confirmed],
            fmt="D",
            mfc="none",
            c=CONFIRMED_COLOUR,
            capsize=3,
            label=CONFIRMED_NAME,
        )
        on_front = _confirmed_front(points)
        axes.step([p["gflops"] for p in on_front], [p["front_auc"] for p in on_front], where="post", c=CONFIRMED_COLOUR, ls="--", lw=1.2)
    for point in points:
        if point["baseline"]:
            axes.scatter(
                [point["gflops"]], [point["val_auc"]], marker="*", s=220, c="gold", edgecolors="black", zorder=5, label=BASELINE_NAME
            )
        axes.annotate(
            str(point["trial"]), (point["gflops"], point["val_auc"]), xytext=(4, 4), textcoords="offset points", fontsize="x-small"
        )
    axes.set(xscale="log", xlabel="GFLOPs per patch (log)", ylabel="val AUC", title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    return _png(figure)


@dataclass(frozen=True)
class _Frame:
    """The plot area in pixels and what it shows: log GFLOPs across, val AUC upwards."""

    left: float
    top: float
    right: float
    bottom: float
    log_gflops: tuple[float, float]
    auc: tuple[float, float]

    @classmethod
    def around(cls, points: list[Point], left: float, top: float, right: float, bottom: float) -> _Frame:
        """The frame that shows `points` (before the first trial is trained: 1 GFLOPs, AUC 0.5)."""
        log_gflops = _padded([math.log10(p["gflops"]) for p in points] or [0.0], least=0.1)
        spreads = [p["mean_val_auc"] + side * (p["val_auc_sd"] or 0.0) for p in _confirmed(points) for side in (-1, 1)]
        aucs = [p["val_auc"] for p in points] + spreads
        return cls(left, top, right, bottom, log_gflops, _padded(aucs or [0.5], least=0.01))

    def x(self, gflops: float) -> float:
        low, high = self.log_gflops
        return self.left + (math.log10(gflops) - low) / (high - low) * (self.right - self.left)

    def y(self, auc: float) -> float:
        low, high = self.auc
        return self.bottom - (auc - low) / (high - low) * (self.bottom - self.top)

    def gflops_ticks(self) -> list[float]:
        low, high = (10**v for v in self.log_gflops)
        return _within(LogLocator(subs=(1.0, 2.0, 5.0)).tick_values(low, high), low, high)

    def auc_ticks(self) -> list[float]:
        return _within(MaxNLocator(nbins=6).tick_values(*self.auc), *self.auc)


def _padded(values: list[float], least: float) -> tuple[float, float]:
    """The values' range with a margin of 5 % each side (of `least` when they are all equal)."""
    low, high = min(values), max(values)
    margin = (high - low) * 0.05 or least
    return low - margin, high + margin


def _within(ticks: Iterable[float], low: float, high: float) -> list[float]:
    inside = [float(t) for t in ticks if low <= t <= high]
    return inside if len(inside) >= 2 else [low, high]


def _plus_minus(value: float, spread: float | None) -> str:
    return f"{value:.4f}" if spread is None else f"{value:.4f} ± {spread:.4f}"


def _latency(point: Point) -> str | None:
    return None if point["latency_ms"] is None else f"{point['latency_ms']:.2f} ms/patch"


def _details(point: Point) -> str:
    """What hovering over a point tells, one fact a line."""
    standing = (
        f"stopped at the {point['stopped_at_rung']}-epoch rung (its val AUC there)"
        if point.get("stopped_at_rung")
        else ("baseline, " if point["baseline"] else "") + ("on the Pareto front" if point["pareto"] else "dominated")
    )
    return "\n".join(
        [
            f"trial {point['trial']} · {point['label']}",
            standing,
            f"input {point['input_size']} px · {point['gflops']:.4g} GFLOPs · {_latency(point) or 'latency not recorded'}",
            f"val AUC {_plus_minus(point['val_auc'], point['val_auc_std'])}",
            f"test AUC {_plus_minus(point['test_auc'], point['test_auc_std'])}",
            *(
                [
                    f"over {point['seeds']} seeds: val AUC {_plus_minus(point['mean_val_auc'], point['val_auc_sd'])}, "
                    f"test AUC {_plus_minus(point['mean_test_auc'], point['test_auc_sd'])}"
                    + (" · on the confirmed front" if point.get("confirmed_front") else "")
                ]
                if point.get("mean_val_auc") is not None
                else []
            ),
        ]
    )


def _kind(point: Point) -> str:
    return "stopped" if point.get("stopped_at_rung") else "baseline" if point["baseline"] else "trained"


def _star(x: float, y: float, radius: float) -> str:
    corners = [
        (x + r * math.sin(k * math.pi / 5), y - r * math.cos(k * math.pi / 5)) for k, r in zip(range(10), [radius, radius * 0.45] * 5)
    ]
    return " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in corners)


def _symbol(kind: str, x: float, y: float, colour: str = "", ringed: bool = False) -> str:
    """A point's marker, or a legend entry's: a trained candidate is a dot in its method's colour
    (ringed on the front), a stopped one a grey ring, the baseline a gold star."""
    if kind == "baseline":
        return f'<polygon points="{_star(x, y, 9)}" fill="gold" stroke="black"/>'
    if kind == "stopped":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="none" stroke="{STOPPED_COLOUR}" stroke-width="1.5"/>'
    if kind in ("front", "confirmed"):
        return f'<line class="{kind}" x1="{x - 8:.1f}" x2="{x + 8:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'
    ring = ' stroke="black" stroke-width="1.5"' if ringed else ""
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{escape(colour)}"{ring}/>'


def _point_svg(point: Point, frame: _Frame, colours: dict[str, str]) -> str:
    """One point: a link to its MLflow run holding its marker, its trial number and its details."""
    x, y, kind = frame.x(point["gflops"]), frame.y(point["val_auc"]), _kind(point)
    return (
        f'<a class="point {kind}" href="{escape(point["run_link"])}" target="_top" data-trial="{point["trial"]}">'
        f"<title>{escape(_details(point))}</title>{_symbol(kind, x, y, colours[point['method']], point['pareto'])}"
        f'<text class="label" x="{x + 6:.1f}" y="{y - 6:.1f}">{point["trial"]}</text></a>'
    )


def _staircase(front: list[Point], frame: _Frame, key: str = "val_auc", css: str = "front") -> str:
    """A front as a step line: each point's AUC (`key`) holds until the next point's GFLOPs."""
    corners = [(frame.x(front[0]["gflops"]), frame.y(front[0][key]))]
    for point in front[1:]:
        x = frame.x(point["gflops"])
        corners += [(x, corners[-1][1]), (x, frame.y(point[key]))]
    return f'<polyline class="{css}" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in corners)}"/>'


def _error_bar(point: Point, frame: _Frame) -> str:
    """A confirmed point's mean val AUC ± sd over its seeds, a diamond on a bar."""
    x, mean, sd = frame.x(point["gflops"]), point["mean_val_auc"], point["val_auc_sd"] or 0.0
    low, high, y = frame.y(mean - sd), frame.y(mean + sd), frame.y(mean)
    diamond = f"{x:.1f},{y - 5:.1f} {x + 5:.1f},{y:.1f} {x:.1f},{y + 5:.1f} {x - 5:.1f},{y:.1f}"
    return f'<g class="confirmed"><line x1="{x:.1f}" x2="{x:.1f}" y1="{low:.1f}" y2="{high:.1f}"/><polygon points="{diamond}"/></g>'


def _axes_svg(frame: _Frame) -> list[str]:
    width, height = frame.right - frame.left, frame.bottom - frame.top
    parts = [f'<rect class="area" x="{frame.left}" y="{frame.top}" width="{width}" height="{height}"/>']
    for tick in frame.gflops_ticks():
        x = frame.x(tick)
        parts += [
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{frame.top}" y2="{frame.bottom}"/>',
            f'<text class="tick" x="{x:.1f}" y="{frame.bottom + 16}" text-anchor="middle">{tick:.3g}</text>',
        ]
    for tick in frame.auc_ticks():
        y = frame.y(tick)
        parts += [
            f'<line class="grid" x1="{frame.left}" x2="{frame.right}" y1="{y:.1f}" y2="{y:.1f}"/>',
            f'<text class="tick" x="{frame.left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.3g}</text>',
        ]
    centre, middle = (frame.left + frame.right) / 2, (frame.top + frame.bottom) / 2
    return [
        *parts,
        f'<text class="axis" x="{centre}" y="{frame.bottom + 40}" text-anchor="middle">GFLOPs per patch (log)</text>',
        f'<text class="axis" x="18" y="{middle}" text-anchor="middle" transform="rotate(-90 18 {middle})">val AUC</text>',
    ]


def _legend_svg(points: list[Point], front: list[Point], colours: dict[str, str], x: float, y: float) -> list[str]:
    finished, stopped = _split_stopped(points)
    entries = [("trained", method.upper(), colours[method]) for method in _by_method(finished)]
    entries += [("stopped", STOPPED_NAME, "")] if stopped else []
    entries += [("front", "Pareto front", "")] if front else []
    entries += [("confirmed", CONFIRMED_NAME, "")] if _confirmed(points) else []
    entries += [("baseline", BASELINE_NAME, "")] if any(p["baseline"] for p in points) else []
    parts = []
    for row, (kind, name, colour) in enumerate(entries):
        line_y = y + 20 * row
        parts += [_symbol(kind, x, line_y, colour), f'<text class="legend" x="{x + 14}" y="{line_y + 4}">{escape(name)}</text>']
    return parts


_STYLE = """
body { font: 13px system-ui, sans-serif; margin: 8px; color: #222; }
svg { width: 100%; max-width: 980px; height: auto; }
.area { fill: none; stroke: #888; }
.grid { stroke: #ddd; }
.tick, .label, .legend { font-size: 11px; fill: #333; }
.axis, .title { font-size: 13px; fill: #222; }
.front { fill: none; stroke: black; stroke-width: 1.2; }
.confirmed { fill: none; stroke: #2ca02c; stroke-width: 1.4; stroke-dasharray: 5 3; }
g.confirmed { stroke-dasharray: none; }
.point { cursor: pointer; }
.point:hover circle, .point:hover polygon { stroke: #d62728; stroke-width: 2.5; }
#tip { position: fixed; pointer-events: none; white-space: pre-line; background: #fffff0; border: 1px solid #888;
       padding: 4px 8px; font-size: 12px; box-shadow: 1px 1px 4px #0003; }
"""

# Runs' links are `#/experiments/…/runs/…`, relative to the MLflow UI. The UI previews this file
# from a blob: address, against which they do not resolve: there they are made absolute on the
# page that shows the preview (the referrer: the UI's address). The preview's sandbox forbids
# leaving its frame, so a plain click that cannot open the run says how to: Ctrl-click and
# middle-click open it in a new tab. Each point's <title> (the browser's tooltip when scripts
# do not run) moves into a styled tip.
_SCRIPT = """
(() => {
  const ui = location.protocol === "blob:" ? document.referrer || new URL(location.href).origin : null;
  const tip = document.getElementById("tip");
  for (const point of document.querySelectorAll(".point")) {
    if (ui) point.setAttribute("href", new URL(point.getAttribute("href"), ui).href);
    const title = point.querySelector("title");
    const details = title.textContent;
    title.remove();
    point.addEventListener("mouseenter", () => { tip.textContent = details; tip.hidden = false; });
    point.addEventListener("mousemove", (event) => {
      tip.style.left = `${Math.min(event.clientX + 14, innerWidth - tip.offsetWidth - 4)}px`;
      tip.style.top = `${event.clientY + 14}px`;
    });
    point.addEventListener("mouseleave", () => { tip.hidden = true; });
    point.addEventListener("click", (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey) return;  // the browser opens a tab or window
      event.preventDefault();
      try {
        window.top.location.href = point.getAttribute("href");
      } catch {
        tip.textContent = `${details}\n\nThis preview may not leave its frame: Ctrl-click or middle-click opens the run in a new tab.`;
      }
    });
  }
})();
"""


def pareto_html(points: list[Point], front: list[Point], title: str) -> str:
    """The Pareto view as one HTML page that loads nothing: an SVG of val AUC against log GFLOPs,
    drawn as `pareto_png` draws it, each point a link to its MLflow run (`run_link`) labelled with
    its trial number and telling its details on hover (`label`, `input_size`, `latency_ms`,
    `val_auc_std`, `test_auc_std`, which the point dicts hold too); confirmed points also at their
    mean val AUC ± sd over seeds, their front dashed."""
    width, height = 820, 480
    frame = _Frame.around(points, left=64, top=40, right=590, bottom=420)
    colours = _colours(points)
    confirmed_front = _confirmed_front(points)
    # Stopped points first and the baseline last, so that the full-budget ones stay on top.
    drawn = sorted(points, key=lambda p: (_kind(p) != "stopped", p["baseline"]))
    svg = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text class="title" x="{width / 2}" y="22" text-anchor="middle">{escape(title)}</text>',
        *_axes_svg(frame),
        *([_staircase(front, frame)] if front else []),
        *(_error_bar(point, frame) for point in _confirmed(points)),
        *([_staircase(confirmed_front, frame, "front_auc", "confirmed")] if confirmed_front else []),
        *(_point_svg(point, frame, colours) for point in drawn),
        *_legend_svg(points, front, colours, x=frame.right + 24, y=frame.top + 10),
        "</svg>",
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{_STYLE}</style></head><body>',
            *svg,
            '<div id="tip" hidden></div>',
            f"<script>{_SCRIPT}</script>",
            "</body></html>",
        ]
    )


def _markdown(text: str) -> str:
    """Text shown as it is in Markdown: its punctuation escaped."""
    return re.sub(r"([\\`*_\[\]|<>#])", r"\\\1", text)


def pareto_markdown(front: list[Point], title: str, parent_link: str, confirmed: list[Point] | None = None) -> str:
    """The front as a Markdown table for the experiment's description, and the confirmed front
    (mean ± sd over seeds) when there is one: each row links to its run, the heading to the
    study's parent run, which holds the plots."""
    lines = [
        f"### {_markdown(title)}",
        "",
        f"The Pareto front (val AUC up, GFLOPs down). The [study's run]({parent_link}) holds the plots "
        "(pareto.html, pareto.png) and every trial (trials.json).",
        "",
        *_markdown_table(front, "val_auc", "val_auc_std", "test_auc", "test_auc_std"),
    ]
    if confirmed:
        lines += [
            "",
            "**Confirmed front**: each point trained over more seeds, by its mean val AUC (confirmed_front.json).",
            "",
            *_markdown_table(confirmed, "mean_val_auc", "val_auc_sd", "mean_test_auc", "test_auc_sd", seeds=True),
        ]
    return "\n".join(lines) + "\n"


def _markdown_table(points: list[Point], val: str, val_spread: str, test: str, test_spread: str, seeds: bool = False) -> list[str]:
    lines = [
        f"| trial | candidate | input | GFLOPs | × fewer | latency |{' seeds |' if seeds else ''} val AUC | test AUC | run |",
        f"|--:|---|--:|--:|--:|--:|{'--:|' if seeds else ''}---|---|---|",
    ]
    for point in points:
        candidate = _markdown(point["label"]) + (" (baseline)" if point["baseline"] else "")
        reduction = f"{point['reduction']:.2f}" if math.isfinite(point["reduction"]) else "–"
        # A point of one seed (the baseline, as it is) shows its own figures where the others' means stand.
        own = point[val] is None
        val_figures = (point["val_auc"], point["val_auc_std"]) if own else (point[val], point[val_spread])
        test_figures = (point["test_auc"], point["test_auc_std"]) if own else (point[test], point[test_spread])
        seeds_cell = f" {point['seeds']} |" if seeds else ""
        lines.append(
            f"| {point['trial']} | {candidate} | {point['input_size']} px | {point['gflops']:.4g} | {reduction}"
            f" | {_latency(point) or '–'} |{seeds_cell} {_plus_minus(*val_figures)} | {_plus_minus(*test_figures)}"
            f" | [run]({point['run_link']}) |"
        )
    return lines
