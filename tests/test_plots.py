"""The Pareto views logged to MLflow, from hand-made points: the HTML page loads nothing, draws
one linked, labelled point per trial on a log GFLOPs axis, the front as a staircase and the
stopped candidates apart, and lists the front's runs; the PNG keeps its legend off the points
and its GFLOPs in plain numbers; the Markdown table lists the front; optuna-dashboard's figure
puts GFLOPs across. What the page's script does in the MLflow UI's sandboxed preview is
bench/dashboard_browser.py's to check, in a real browser."""

import json
from html.parser import HTMLParser

import pytest

from nar_search.search.front.plots import BASELINE_NAME, pareto_figure, pareto_html, pareto_markdown, pareto_plotly, pareto_png


def point(trial: int, gflops: float, val_auc: float, method: str = "nar", **fields) -> dict:
    return {
        "trial": trial,
        "method": method,
        "label": f"{method} ϕ{trial}",
        "input_size": 48,
        "gflops": gflops,
        "reduction": 1.0,
        "val_auc": val_auc,
        "val_auc_std": 0.01,
        "test_auc": val_auc - 0.02,
        "test_auc_std": 0.02,
        "latency_ms": 1.5,
        "mlflow_run_id": f"run{trial}",
        "run_link": f"#/experiments/7/runs/run{trial}",
        "baseline": False,
        "pareto": False,
        "stopped_at_rung": None,
        **fields,
    }


@pytest.fixture
def points() -> list[dict]:
    return [
        point(0, 1.0, 0.90, baseline=True, pareto=True),
        point(1, 0.1, 0.85, pareto=True),
        point(2, 0.01, 0.70, "ir", pareto=True),
        point(3, 0.5, 0.80),  # dominated by trial 1
        point(4, 0.05, 0.60, "resrep", stopped_at_rung=1),
    ]


class Elements(HTMLParser):
    """Every element's tag and attributes, and the text of each point (an `a.point`)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.point_texts: list[str] = []
        self._in_point = False
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag == "a" and "point" in dict(attrs).get("class", "").split():
            self._in_point = True
            self.point_texts.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_point = self._in_point and tag != "a"

    def handle_data(self, data: str) -> None:
        if self._in_point:
            self.point_texts[-1] += data

    def points(self) -> list[dict]:
        return [attrs for tag, attrs in self.elements if tag == "a" and "point" in attrs.get("class", "").split()]

    def first_shape_after(self, index: int) -> dict:
        return next(attrs for tag, attrs in self.elements[index + 1 :] if tag in ("circle", "polygon"))


def test_the_html_loads_nothing_from_the_network(points):
    page = pareto_html(points, [p for p in points if p["pareto"]], "tiny")
    parsed = Elements(page)
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert not [attrs for tag, attrs in parsed.elements if tag in ("script", "img", "iframe") and "src" in attrs]
    assert not [tag for tag, _ in parsed.elements if tag == "link"]
    assert [tag for tag, _ in parsed.elements].count("script") == 1  # the tooltip's, inline
    assert "plotly" not in page.lower()


def test_each_point_is_a_labelled_link_to_its_run_with_its_details(points):
    parsed = Elements(pareto_html(points, [p for p in points if p["pareto"]], "tiny"))
    drawn = parsed.points()
    assert len(drawn) == len(points)
    by_trial = {int(attrs["data-trial"]): (attrs, text) for attrs, text in zip(drawn, parsed.point_texts)}
    assert sorted(by_trial) == [p["trial"] for p in sorted(points, key=lambda p: p["trial"])]
    for p in points:
        attrs, text = by_trial[p["trial"]]
        assert attrs["href"] == f"#/experiments/7/runs/run{p['trial']}" and attrs["target"] == "_top"
        assert attrs["data-run"] == f"run{p['trial']}"
        details, label = text[: text.rindex(str(p["trial"]))], text[text.rindex(str(p["trial"])) :]
        assert label == str(p["trial"])  # the number drawn beside the marker
        assert f"trial {p['trial']} · {p['label']}" in details and "input 48 px" in details
        assert "1.50 ms/patch" in details and f"val AUC {p['val_auc']:.4f} ± 0.0100" in details
    assert "stopped" in by_trial[4][0]["class"].split() and "at the 1-epoch rung" in by_trial[4][1]
    assert "baseline" in by_trial[0][0]["class"].split()


def test_gflops_are_on_a_log_axis_and_the_front_is_a_staircase(points):
    front = [p for p in sorted(points, key=lambda p: p["gflops"]) if p["pareto"]]
    parsed = Elements(pareto_html(points, front, "tiny"))
    index = {int(attrs["data-trial"]): i for i, (tag, attrs) in enumerate(parsed.elements) if "point" in attrs.get("class", "").split()}
    x = {trial: float(parsed.first_shape_after(i).get("cx", "nan")) for trial, i in index.items() if trial != 0}
    assert x[2] < x[1] < x[3]  # 0.01, 0.1, 0.5 GFLOPs
    decade = x[1] - x[2]
    assert decade > 0 and x[3] - x[1] == pytest.approx(decade * 0.69897, abs=0.2)  # log10(5) of a decade
    (staircase,) = [attrs for tag, attrs in parsed.elements if tag == "polyline" and attrs.get("class") == "front"]
    corners = [tuple(map(float, corner.split(","))) for corner in staircase["points"].split()]
    assert len(corners) == 2 * len(front) - 1
    assert all(a[1] == b[1] for a, b in zip(corners[::2], corners[1::2]))  # across at the AUC reached, then up
    ticks = [text for text in ("0.01", "0.1", "1") if f">{text}</text>" in pareto_html(points, front, "tiny")]
    assert ticks == ["0.01", "0.1", "1"]


def test_every_text_is_escaped(points):
    points[1] |= {"label": '<script>alert("x")</script>', "run_link": '#/x" onclick="alert(1)'}
    page = pareto_html(points, [], "a <b> & 'c'")
    assert "<script>alert" not in page and 'onclick="alert' not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page and "a &lt;b&gt; &amp; &#x27;c&#x27;" in page
    parsed = Elements(page)
    assert [tag for tag, _ in parsed.elements].count("script") == 1


def test_the_png_is_drawn_with_a_point_per_trial(points, monkeypatch):
    import matplotlib.axes

    labels = []
    real = matplotlib.axes.Axes.annotate
    monkeypatch.setattr(matplotlib.axes.Axes, "annotate", lambda self, text, *a, **k: labels.append(text) or real(self, text, *a, **k))
    png = pareto_png(points, [p for p in points if p["pareto"]], "tiny")
    assert png.startswith(b"\x89PNG")
    assert sorted(labels) == [str(p["trial"]) for p in sorted(points, key=lambda p: p["trial"])]


def test_the_markdown_table_lists_the_front_with_links(points):
    front = [p for p in points if p["pareto"]]
    front[1]["label"] = "nar | odd_name"
    table = pareto_markdown(front, "my_study: val AUC vs GFLOPs", "#/experiments/7/runs/parent")
    rows = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [int(row.split("|")[1]) for row in rows] == [p["trial"] for p in front]
    for p, row in zip(front, rows):
        assert row.endswith(f"[run](#/experiments/7/runs/run{p['trial']}) |")
    assert "nar \\| odd\\_name" in table and "my\\_study" in table and "(baseline)" in rows[0]
    assert "](#/experiments/7/runs/parent)" in table
    # the first line, all that the UI shows closed, says the outcome in words, no Markdown heading
    cheapest = max((p for p in front if not p["baseline"]), key=lambda p: p["reduction"])
    first = table.splitlines()[0]
    assert not first.startswith("#") and f"up to {cheapest['reduction']:.1f}× fewer GFLOPs (trial {cheapest['trial']}," in first


def test_a_study_without_a_trained_trial_yet_still_gets_its_views():
    parsed = Elements(pareto_html([], [], "tiny: val AUC vs GFLOPs (0 trained)"))
    assert parsed.points() == [] and any(tag == "svg" for tag, _ in parsed.elements)
    assert pareto_png([], [], "tiny").startswith(b"\x89PNG")
    assert "| trial |" in pareto_markdown([], "tiny", "#/experiments/7/runs/parent")


def test_confirmed_points_show_their_mean_and_spread_and_their_own_front(points):
    confirmed = {"seeds": 3, "val_auc_sd": 0.02, "mean_test_auc": 0.8, "test_auc_sd": 0.01, "confirmed": True}
    points[1] |= confirmed | {"mean_val_auc": 0.82, "confirmed_front": True}
    points[3] |= confirmed | {"mean_val_auc": 0.81, "confirmed_front": False}
    points[0] |= {"seeds": 1, "confirmed": True, "confirmed_front": True, "mean_val_auc": None}
    page = pareto_html(points, [p for p in points if p["pareto"]], "tiny")
    parsed = Elements(page)
    bars = [attrs for tag, attrs in parsed.elements if tag == "g" and attrs.get("class") == "confirmed"]
    assert len(bars) == 2  # the baseline, of one evaluation, has no spread to draw
    assert len([attrs for tag, attrs in parsed.elements if tag == "polyline" and attrs.get("class") == "confirmed"]) == 1
    assert "over 3 seeds: val AUC 0.8200 ± 0.0200" in page and "on the confirmed front" in page
    table = pareto_markdown([p for p in points if p["pareto"]], "t", "#/p", [p for p in points if p.get("confirmed_front")])
    confirmed_rows = table.split("**Confirmed front**")[1]
    assert "| 1 | nar ϕ1 | 48 px | 0.1 | 1.00 | 1.50 ms/patch | 3 | 0.8200 ± 0.0200 | 0.8000 ± 0.0100 |" in confirmed_rows
    assert "| 0 | nar ϕ0 (baseline) |" in confirmed_rows and "\n| 3 |" not in confirmed_rows
    assert pareto_png(points, [p for p in points if p["pareto"]], "tiny").startswith(b"\x89PNG")


def test_the_front_s_runs_are_listed_beside_the_chart_to_copy(points):
    front = [p for p in sorted(points, key=lambda p: p["gflops"]) if p["pareto"]]
    page = pareto_html(points, front, "tiny")
    parsed = Elements(page)
    rows = [attrs for tag, attrs in parsed.elements if tag == "tr" and "data-trial" in attrs]
    assert [int(row["data-trial"]) for row in rows] == [p["trial"] for p in front]
    runs = [attrs for tag, attrs in parsed.elements if tag == "a" and attrs.get("class") == "run"]
    assert [(a["href"], a["data-run"], a["target"]) for a in runs] == [(p["run_link"], p["mlflow_run_id"], "_top") for p in front]
    assert all(f"<code>{p['mlflow_run_id']}</code>" in page for p in front)
    assert "<td>NAR (baseline)</td>" in page and "<td>0.01</td><td>0.7000</td>" in page
    # What the script fills and copies from when a click may not leave the preview's frame.
    fields = {attrs["id"]: attrs for tag, attrs in parsed.elements if tag == "input"}
    assert set(fields) == {"run-id", "run-url"} and all("readonly" in f for f in fields.values())
    assert {attrs["data-copy"] for tag, attrs in parsed.elements if tag == "button"} == {"run-id", "run-url"}
    assert 'document.execCommand("copy")' in page and 'window.origin !== "null"' in page
    # No claim of what the sandbox refuses: leading the top page away, or a window of the script's.
    assert "window.top" not in page and "window.open" not in page and "_blank" not in page


def test_the_png_keeps_its_legend_off_the_points_and_its_gflops_plain(points):
    points[1] |= {"seeds": 3, "val_auc_sd": 0.02, "mean_test_auc": 0.8, "test_auc_sd": 0.01, "confirmed": True}
    points[1] |= {"mean_val_auc": 0.82, "confirmed_front": True}
    for drawn in (points, [point(0, 0.31, 0.9, baseline=True), point(1, 0.33, 0.8)]):  # four decades, and a twentieth of one
        figure = pareto_figure(drawn, [p for p in drawn if p["pareto"]], "tiny")
        figure.canvas.draw()
        (axes,) = figure.axes
        (legend,) = figure.legends
        box, area = legend.get_window_extent(), axes.get_window_extent()
        assert not box.overlaps(area)  # off the axes: over no point
        assert figure.bbox.x0 <= box.x0 and box.x1 <= figure.bbox.x1 and figure.bbox.y0 <= box.y0  # and not cut off
        labels = [label.get_text() for label in axes.get_xticklabels(which="both") if label.get_text()]
        assert not [label for label in labels if "10^" in label or "times" in label or "×" in label]
        assert len(labels) >= 3 and all(float(label) > 0 for label in labels)  # plain numbers
    assert labels == ["0.31", "0.32", "0.33"]
    figure = pareto_figure(points, [], "tiny")
    figure.canvas.draw()
    assert [label.get_text() for label in figure.axes[0].get_xticklabels()] == ["0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1"]


def test_optuna_dashboard_s_figure_puts_gflops_across_and_names_the_baseline(points):
    figure = json.loads(json.dumps(pareto_plotly(points, [p for p in points if p["pareto"]], "tiny")))  # as it is stored
    axis = figure["layout"]["xaxis"]
    assert axis["type"] == "log" and axis["title"]["text"].startswith("GFLOPs") and figure["layout"]["yaxis"]["title"]["text"] == "val AUC"
    assert axis["ticktext"] == ["0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1"] and axis["tickvals"][-1] == 1.0
    traces = {trace["name"]: trace for trace in figure["data"]}
    baseline = traces[BASELINE_NAME]
    assert baseline["x"] == [1.0] and baseline["y"] == [0.90] and baseline["marker"]["symbol"] == "star"
    assert traces["NAR"]["text"] == ["0", "1", "3"] and traces["Pareto front"]["line"]["shape"] == "hv"
    assert "trial 0 · NAR · baseline" in traces[BASELINE_NAME]["hovertext"][0]
    assert figure["layout"]["legend"]["x"] > 1  # right of the plot, off its points
