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
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter
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
    """`pareto_figure` as a PNG."""
    return _png(pareto_figure(points, front, title))


def pareto_figure(points: list[Point], front: list[Point], title: str) -> Figure:
    """AUC against GFLOPs: every trial by method and labelled with its number, the front as a
    step line, the baseline starred; confirmed points at their mean ± sd over seeds, their front
    dashed. `points` and `front` hold dicts with gflops, val_auc, method, trial and baseline (and
    the confirmed ones mean_val_auc, val_auc_sd, confirmed, confirmed_front)."""
    # Constrained layout keeps the legend below the axes, where it can cover no point, and in the figure.
    figure, axes = plt.subplots(figsize=(6.5, 5.5), layout="constrained")
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
    _plain_log_ticks(axes)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        figure.legend(loc="outside lower center", ncols=2, fontsize="small")
    return figure


def _plain_log_ticks(axes: Axes) -> None:
    """The log GFLOPs axis ticked as the HTML view ticks it, in plain numbers (0.2, 0.5, 1):
    matplotlib's own labels read 2×10⁻¹, and none at all on a span of less than a decade."""
    low, high = axes.get_xlim()
    axes.set_xticks(_gflops_ticks(low, high))
    axes.set_xlim(low, high)
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _plain(value)))
    axes.xaxis.set_minor_formatter(NullFormatter())


def _gflops_ticks(low: float, high: float) -> list[float]:
    """Ticks at 1, 2 and 5 times the powers of ten between `low` and `high` GFLOPs (at the powers
    alone where those would crowd the axis); evenly spaced ones on a span too short for three."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    ticks = [float(f"{m}e{d}") for d in decades for m in (1, 2, 5) if low <= float(f"{m}e{d}") <= high]
    if len(ticks) > 8:
        return [tick for tick in ticks if f"{tick:e}".startswith("1")]
    return ticks if len(ticks) >= 3 else _within(MaxNLocator(nbins=4, steps=[1, 2, 5, 10]).tick_values(low, high), low, high)


def _plain(value: float) -> str:
    """A tick's number to three figures, never in powers of ten."""
    return str(np.format_float_positional(float(f"{value:.3g}"), trim="-"))


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
        return _gflops_ticks(*(10**v for v in self.log_gflops))

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


def _run_link(point: Point, css: str) -> str:
    """The opening tag of a link to the point's MLflow run (a point's, or a row's of the list)."""
    return (
        f'<a class="{css}" href="{escape(point["run_link"])}" target="_top" '
        f'data-trial="{point["trial"]}" data-run="{escape(point["mlflow_run_id"])}">'
    )


def _point_svg(point: Point, frame: _Frame, colours: dict[str, str]) -> str:
    """One point: a link to its MLflow run holding its marker, its trial number and its details."""
    x, y, kind = frame.x(point["gflops"]), frame.y(point["val_auc"]), _kind(point)
    return (
        f"{_run_link(point, f'point {kind}')}"
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
            f'<text class="tick" x="{x:.1f}" y="{frame.bottom + 16}" text-anchor="middle">{_plain(tick)}</text>',
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
main { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: flex-start; }
svg { flex: 1 1 500px; max-width: 820px; height: auto; }
aside { flex: 1 1 420px; max-width: 560px; overflow-x: auto; }
h2 { font-size: 13px; margin: 10px 0 4px; }
table { border-collapse: collapse; font-size: 12px; }
th, td { padding: 2px 6px; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
th:nth-child(2), td:nth-child(2), th:last-child, td:last-child { text-align: left; }
code { font-size: 11px; user-select: all; }
tr.chosen { background: #fff3c4; }
#chosen { border: 1px solid #bbb; background: #fafafa; padding: 6px 8px; }
#chosen-details { white-space: pre-line; margin-bottom: 4px; font-size: 12px; }
#chosen label { display: block; margin-top: 4px; font-size: 12px; }
.copyable { display: flex; gap: 4px; }
.copyable input { flex: 1; font: 11px monospace; }
#copied { margin: 6px 0 0; font-size: 12px; }
.how { font-size: 12px; color: #555; }
.area { fill: none; stroke: #888; }
.grid { stroke: #ddd; }
.tick, .label, .legend { font-size: 11px; fill: #333; }
.axis, .title { font-size: 13px; fill: #222; }
.front { fill: none; stroke: black; stroke-width: 1.2; }
.confirmed { fill: none; stroke: #2ca02c; stroke-width: 1.4; stroke-dasharray: 5 3; }
g.confirmed { stroke-dasharray: none; }
.point { cursor: pointer; }
.point:hover circle, .point:hover polygon, .point.chosen circle, .point.chosen polygon { stroke: #d62728; stroke-width: 2.5; }
#tip { position: fixed; pointer-events: none; white-space: pre-line; background: #fffff0; border: 1px solid #888;
       padding: 4px 8px; font-size: 12px; box-shadow: 1px 1px 4px #0003; }
"""

_HOW = (
    "A point, or a trial in the list, links to its MLflow run. In the MLflow UI's preview, whose frame may not lead "
    "its page elsewhere nor open a window, a click shows the run's id and address and copies the address (paste it "
    "in the address bar); Ctrl-click or middle-click opens the run in a new tab where the browser allows it "
    "(Chromium-based ones, such as Chrome and Edge, do). Opened as a file, which knows no MLflow UI's address, a "
    "click shows the run's id and copies it."
)

_CHOSEN = """<section id="chosen" hidden aria-live="polite">
<div id="chosen-details"></div>
<label for="run-id">run id</label>
<div class="copyable"><input id="run-id" readonly><button type="button" data-copy="run-id">copy</button></div>
<label for="run-url" id="run-url-label">run page</label>
<div class="copyable"><input id="run-url" readonly><button type="button" data-copy="run-url">copy</button></div>
<p id="copied" role="status"></p>
</section>"""

# Runs' links are `#/experiments/…/runs/…`, relative to the MLflow UI. MLflow 3's UI previews
# this file from a blob: address in a frame sandboxed with `allow-scripts` alone: the links are
# made absolute there on the page that shows the preview (the referrer: the UI's address), but
# the sandbox refuses what a plain click would do with them, leading the top page away (target
# _top) or opening a window. So a click there chooses the run instead: its id and address are
# shown, selected, and copied with execCommand("copy"), which the sandbox allows in a click
# (the Clipboard API it refuses). A Ctrl-click or middle-click is left to the browser, which
# (Chromium) opens the link in a new tab despite the sandbox. Opened as a file, the links are
# still relative to an unknown UI: a click only chooses the run. Elsewhere (the blob opened as a
# page of its own) the links lead to their runs. bench/dashboard_browser.py checks all of this
# in Chromium. Each point's <title> (the browser's tooltip when scripts do not run) moves into a
# styled tip.
_SCRIPT = """
(() => {
  const ui = location.protocol === "blob:" ? document.referrer || `${new URL(location.href).origin}/` : null;
  const leaves = ui !== null && window.origin !== "null";
  const byId = (id) => document.getElementById(id);
  const tip = byId("tip");
  const details = new Map();
  for (const point of document.querySelectorAll(".point")) {
    const title = point.querySelector("title");
    details.set(point.dataset.trial, title.textContent);
    title.remove();
    point.addEventListener("mouseenter", () => { tip.textContent = details.get(point.dataset.trial); tip.hidden = false; });
    point.addEventListener("mousemove", (event) => {
      tip.style.left = `${Math.min(event.clientX + 14, innerWidth - tip.offsetWidth - 4)}px`;
      tip.style.top = `${event.clientY + 14}px`;
    });
    point.addEventListener("mouseleave", () => { tip.hidden = true; });
  }
  const copy = (field) => {
    field.focus();
    field.select();
    try {
      return document.execCommand("copy");
    } catch {
      return false;
    }
  };
  const choose = (link) => {
    const trial = link.dataset.trial;
    byId("chosen-details").textContent = details.get(trial) || `trial ${trial}`;
    byId("run-id").value = link.dataset.run;
    byId("run-url").value = link.getAttribute("href");
    byId("run-url-label").textContent = ui ? "run page" : "run page, after the MLflow UI's address";
    for (const marked of document.querySelectorAll("[data-trial]")) {
      marked.classList.toggle("chosen", marked.dataset.trial === trial && !marked.matches("a.run"));
    }
    byId("chosen").hidden = false;
    const field = byId(ui ? "run-url" : "run-id");
    byId("copied").textContent = copy(field)
      ? `Copied the run's ${ui ? "address: paste it in the address bar" : "id"}.`
      : `Select the run's ${ui ? "address" : "id"} above and copy it (Ctrl-C).`;
  };
  for (const link of document.querySelectorAll("a[data-run]")) {
    if (ui) link.setAttribute("href", new URL(link.getAttribute("href"), ui).href);
    link.addEventListener("click", (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey) return;  // the browser's: a new tab or window
      if (leaves) return;
      event.preventDefault();
      choose(link);
    });
  }
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", () => {
      byId("copied").textContent = copy(byId(button.dataset.copy)) ? "Copied." : "Select it and copy it (Ctrl-C).";
    });
  }
})();
"""


def _runs_table(points: list[Point], heading: str, auc: str) -> list[str]:
    """A front's runs, by GFLOPs: each trial a link to its run, beside its method, GFLOPs, val
    AUC (`auc`) and run id."""
    rows = [
        f'<tr data-trial="{p["trial"]}"><td>{_run_link(p, "run")}{p["trial"]}</a></td>'
        f"<td>{escape(p['method'].upper())}{' (baseline)' if p['baseline'] else ''}</td>"
        f"<td>{p['gflops']:.4g}</td><td>{p[auc]:.4f}</td><td><code>{escape(p['mlflow_run_id'])}</code></td></tr>"
        for p in points
    ]
    head = "<tr><th>trial</th><th>method</th><th>GFLOPs</th><th>val AUC</th><th>run id</th></tr>"
    return [f"<h2>{escape(heading)}</h2>", f"<table><thead>{head}</thead><tbody>", *rows, "</tbody></table>"]


def pareto_html(points: list[Point], front: list[Point], title: str) -> str:
    """The Pareto view as one HTML page that loads nothing: an SVG of val AUC against log GFLOPs,
    drawn as `pareto_png` draws it, each point a link to its MLflow run (`run_link`,
    `mlflow_run_id`) labelled with its trial number and telling its details on hover (`label`,
    `input_size`, `latency_ms`, `val_auc_std`, `test_auc_std`, which the point dicts hold too);
    confirmed points also at their mean val AUC ± sd over seeds, their front dashed. Beside it
    the front's runs, and the run a click chose (see `_SCRIPT`)."""
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
    aside = [
        '<aside id="runs">',
        _CHOSEN,
        *_runs_table(front, "Pareto front", "val_auc"),
        *(_runs_table(confirmed_front, "Confirmed front (mean val AUC over seeds)", "front_auc") if confirmed_front else []),
        f'<p class="how">{escape(_HOW)}</p>',
        "</aside>",
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{_STYLE}</style></head><body>',
            "<main>",
            *svg,
            *aside,
            "</main>",
            '<div id="tip" hidden></div>',
            f"<script>{_SCRIPT}</script>",
            "</body></html>",
        ]
    )


def pareto_plotly(points: list[Point], front: list[Point], title: str) -> dict[str, Any]:
    """The Pareto view as a Plotly figure's JSON (what plotly.js draws; Plotly itself is not
    needed), drawn as `pareto_png` draws it, for optuna-dashboard: val AUC against log GFLOPs,
    every trial by method and labelled with its number, the front as a step line, the baseline
    starred and named in the legend, beside the plot."""
    frame = _Frame.around(points, left=0, top=0, right=1, bottom=1)
    colours = _colours(points)
    finished, stopped = _split_stopped(points)

    def markers(group: list[Point], name: str, marker: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "scatter",
            "mode": "markers+text",
            "name": name,
            "x": [p["gflops"] for p in group],
            "y": [p["val_auc"] for p in group],
            "text": [str(p["trial"]) for p in group],
            "textposition": "top right",
            "hovertext": [
                f"trial {p['trial']} · {p['method'].upper()}{' · baseline' if p['baseline'] else ''}"
                f"<br>{p['gflops']:.4g} GFLOPs · val AUC {p['val_auc']:.4f}"
                for p in group
            ],
            "hoverinfo": "text",
            "cliponaxis": False,  # a trial's number by the plot's edge stays whole
            "marker": marker,
        }

    def steps(line: list[Point], key: str, name: str, style: dict[str, Any]) -> dict[str, Any]:
        xs, ys = [p["gflops"] for p in line], [p[key] for p in line]
        return {"type": "scatter", "mode": "lines", "name": name, "x": xs, "y": ys, "line": {"shape": "hv", **style}, "hoverinfo": "skip"}

    data = [markers(group, method.upper(), {"color": colours[method], "size": 9}) for method, group in _by_method(finished).items()]
    data += [markers(stopped, STOPPED_NAME, {"color": "rgba(0,0,0,0)", "line": {"color": STOPPED_COLOUR, "width": 1.5}})] if stopped else []
    data += [steps(front, "val_auc", "Pareto front", {"color": "black", "width": 1.2})] if front else []
    if confirmed := _confirmed(points):
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": CONFIRMED_NAME,
                "x": [p["gflops"] for p in confirmed],
                "y": [p["mean_val_auc"] for p in confirmed],
                "error_y": {"type": "data", "array": [p["val_auc_sd"] for p in confirmed]},
                "marker": {"symbol": "diamond-open", "color": CONFIRMED_COLOUR, "size": 9},
            }
        )
        data.append(steps(_confirmed_front(points), "front_auc", "", {"color": CONFIRMED_COLOUR, "dash": "dash"}) | {"showlegend": False})
    baseline = [p for p in points if p["baseline"]]
    star = {"symbol": "star", "size": 18, "color": "gold", "line": {"color": "black", "width": 1}}
    data += [markers(baseline, BASELINE_NAME, star)] if baseline else []
    ticks = frame.gflops_ticks()
    layout = {
        "title": {"text": title},
        "xaxis": {
            "type": "log",
            "title": {"text": "GFLOPs per patch (log)"},
            "range": list(frame.log_gflops),  # a log axis's range is in powers of ten
            "tickvals": ticks,
            "ticktext": [_plain(tick) for tick in ticks],
        },
        "yaxis": {"title": {"text": "val AUC"}, "range": list(frame.auc)},
        "legend": {"x": 1.02, "y": 1, "font": {"size": 10}},  # plotly's own place, right of the plot: over no point
        "hovermode": "closest",
    }
    return {"data": data, "layout": layout}


def _markdown(text: str) -> str:
    """Text shown as it is in Markdown: its punctuation escaped."""
    return re.sub(r"([\\`*_\[\]|<>#])", r"\\\1", text)


def pareto_markdown(
    front: list[Point], title: str, parent_link: str, confirmed: list[Point] | None = None, baseline: Point | None = None
) -> str:
    """The experiment's description: a first line that says the outcome in plain words (the UI
    shows only the first lines until it is opened, and the experiment list shows Markdown raw),
    then the front as a table, and the confirmed front (mean ± sd over seeds) when there is one:
    each row links to its run, the summary to the study's parent run, which holds the plots."""
    lines = [
        f"{_summary(title, front, confirmed, baseline)} The [study's run]({parent_link}) holds the plots (pareto.html, pareto.png) "
        "and every trial (trials.json).",
        "",
        "The Pareto front (val AUC up, GFLOPs down):",
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


def _summary(title: str, front: list[Point], confirmed: list[Point] | None, baseline: Point | None) -> str:
    """`title`: how far the front reaches, at what val AUC against the baseline's (`baseline`, on
    the front or not: a reduced network may beat it)."""
    baseline = baseline or next((point for point in front if point["baseline"]), None)
    reduced = [point for point in front if not point["baseline"] and math.isfinite(point["reduction"])]
    if not reduced:
        return f"{_markdown(title)}: no reduced network on the front yet."
    cheapest = max(reduced, key=lambda point: point["reduction"])
    against = f" against the baseline's {baseline['val_auc']:.3f}" if baseline else ""
    seeds = f"; {len(confirmed)} confirmed over more seeds" if confirmed else ""
    return (
        f"{_markdown(title)}: {len(front)} points on the front, up to {cheapest['reduction']:.1f}× fewer GFLOPs "
        f"(trial {cheapest['trial']}, val AUC {cheapest['val_auc']:.3f}{against}){seeds}."
    )


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
