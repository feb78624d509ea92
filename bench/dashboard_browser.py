"""The study's Pareto view as a user sees it: in the MLflow UI, in a real browser, offline.

Runs a tiny study (resnet18 at 48 px on 72 synthetic patches; NAR, IR and ResRep; 2 epochs in
2 rungs, so that some candidates stop at a rung) with its own MLflow home, starts `nar
dashboard` on 127.0.0.1 and, in a headless Chromium that may reach nothing but 127.0.0.1:
opens the study's run in the UI and its pareto.html artifact in the UI's preview; counts the
points drawn (one per trained or stopped trial, each labelled and linked to its run); hovers
one (its details); clicks one (the preview's sandbox keeps it in its frame: the page says
so) and Ctrl-clicks it (the run opens in a new tab, named by what it trains); reads the
experiment's description (the front's table). Prints what the browser saw, its console
errors and the requests it blocked; exits 1 when a check fails.

Too slow for CI (a few minutes). Playwright is a bench-only extra, not a project dependency:

    .venv/bin/pip install playwright
    .venv/bin/playwright install chromium    # or a system Chromium (Debian: apt install chromium)
    .venv/bin/python bench/dashboard_browser.py [--work DIR] [--chromium PATH]

With --work the study, its MLflow store and screenshots stay in DIR (a second run there
reuses the finished study); without, all is made in a temporary folder and removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from nar_search.search.tracking import MLFLOW_HOME_ENV

STUDY = "browser"
LOCAL = "127.0.0.1"


def study_config(folder: Path) -> Path:
    path = folder / f"{STUDY}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": STUDY,
                "model": "resnet18",
                "input_size": 48,
                "data": {"source": str(folder / "patches")},
                "training": {"epochs": 2, "batch_size": 24, "patience": None, "accelerator": "cpu"},
                "search": {
                    "phi": [0, 1, 2],
                    "methods": {"nar": {}, "ir": {}, "resrep": {"flops_target": [0.5], "mask_interval": 1, "warmup_epochs": 0}},
                },
                "sampler": "grid",
                "pruner": "halving",
                "halving": {"factor": 2, "rungs": 2},
                "n_trials": 6,
                "storage": f"sqlite:///{folder / 'study.db'}",
            }
        )
    )
    return path


def run_study(folder: Path) -> None:
    if not (folder / "patches").is_dir():
        from nar_search.data.synth_patches import write_patches

        write_patches(folder / "patches", n=72, seed=1)
    config = study_config(folder)
    command = [sys.executable, "-m", "nar_search.search.cli", "study", "run", str(config)]
    subprocess.run(command, cwd=folder, check=True, stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCAL, 0))
        return probe.getsockname()[1]


@contextmanager
def dashboard(folder: Path, port: int) -> Iterator[str]:
    """`nar dashboard` on 127.0.0.1:`port`, until the block ends (it and the MLflow server it starts)."""
    log = (folder / "dashboard.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "nar_search.search.cli", "dashboard", "--port", str(port)],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: the server goes with it
    )
    address = f"http://{LOCAL}:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{address}/health", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the dashboard did not start: see {folder / 'dashboard.log'}") from None
                time.sleep(1)
        yield address
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def expected(folder: Path) -> dict:
    """What the page should show, from the study and the MLflow store themselves."""
    import optuna
    from mlflow.tracking import MlflowClient

    from nar_search.search.front import pareto
    from nar_search.search.study.storage import open_storage
    from nar_search.search.tracking import default_tracking_uri

    study = optuna.load_study(study_name=STUDY, storage=open_storage(f"sqlite:///{folder / 'study.db'}"))
    client = MlflowClient(default_tracking_uri())
    experiment = client.get_experiment_by_name(STUDY).experiment_id
    parent = client.search_runs([experiment], filter_string="tags.`nar.role` = 'study'")[0].info.run_id
    drawn = pareto.trained(study) + pareto.stopped(study)
    return {
        "experiment": experiment,
        "parent": parent,
        "runs": {t.number: t.user_attrs["mlflow_run_id"] for t in drawn},
        "stopped": sorted(t.number for t in pareto.stopped(study)),
        "front": sorted(t.number for t in pareto.front(study)),
        "names": {t.number: client.get_run(t.user_attrs["mlflow_run_id"]).info.run_name for t in drawn},
    }


def chromium_path(playwright, given: str | None) -> str | None:
    """The Chromium to run: the one asked for, Playwright's own, else the system's."""
    if given or Path(playwright.chromium.executable_path).exists():
        return given
    return shutil.which("chromium") or shutil.which("chromium-browser")


def check_in_browser(address: str, want: dict, chromium: str | None, shots: Path | None) -> list[str]:
    from playwright.sync_api import sync_playwright

    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    console, blocked, refused = [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(playwright, chromium))
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        # Offline, as on a hospital network: nothing but the dashboard answers.
        context.route(
            "**/*",
            lambda route: (
                route.continue_() if urlsplit(route.request.url).hostname == LOCAL else (blocked.append(route.request.url), route.abort())
            ),
        )
        context.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        context.on("weberror", lambda error: console.append(f"uncaught: {error.error}"))
        context.on("response", lambda response: refused.append(f"{response.status} {response.url}") if response.status >= 400 else None)
        page = context.new_page()
        print(f"Chromium {browser.version}, {address}")

        page.goto(f"{address}/#/experiments/{want['experiment']}/runs/{want['parent']}/artifacts")
        page.get_by_text("pareto.html").first.click(timeout=120_000)
        view = page.frame_locator("iframe.mlflow-html-iframe")
        points = view.locator("a.point")
        points.first.wait_for(timeout=60_000)
        labels = {int(points.nth(i).get_attribute("data-trial")): points.nth(i) for i in range(points.count())}
        print(f"pareto.html in the UI's preview: {points.count()} points, trials {sorted(labels)}")
        check(points.count() == len(want["runs"]), f"one point per trained or stopped trial ({len(want['runs'])})")
        check(all(labels[n].locator("text.label").text_content() == str(n) for n in labels), "each point labelled with its trial number")
        links = {n: point.get_attribute("href") for n, point in labels.items()}
        check(
            links == {n: f"{address}/#/experiments/{want['experiment']}/runs/{run}" for n, run in want["runs"].items()},
            "each point links to its run's page in the UI",
        )
        stopped = sorted(n for n, point in labels.items() if "stopped" in point.get_attribute("class").split())
        check(stopped == want["stopped"], f"the trials stopped at a rung drawn apart: {stopped}")
        check(view.locator("polyline.front").count() == (1 if want["front"] else 0), f"the front drawn (trials {want['front']})")

        number = want["front"][0]
        target = labels[number].locator("circle, polygon").first
        target.hover()
        tip = view.locator("#tip")
        check(tip.is_visible() and tip.inner_text().startswith(f"trial {number} · "), "hovering shows the point's details")
        print("    " + tip.inner_text().replace("\n", "\n    "))
        if shots:
            page.screenshot(path=shots / "browser-pareto.png")

        target.click()
        page.wait_for_timeout(1000)
        sandboxed = "may not leave its frame" in tip.inner_text()
        print(f"  a plain click: {'the preview keeps it in its frame, the tip says how to open the run' if sandboxed else page.url}")
        with context.expect_page() as opened:
            target.click(modifiers=["Control"])
        run_page = opened.value
        run_page.get_by_text(want["names"][number]).first.wait_for(timeout=60_000)
        check(run_page.url == links[number], f"Ctrl-click opens the run in a new tab, named {want['names'][number]!r}")
        run_page.close()

        page.goto(f"{address}/#/experiments/{want['experiment']}/runs")
        table = page.locator("table").filter(has_text="candidate")
        table.wait_for(state="attached", timeout=60_000)
        rows = [row.inner_text() for row in table.locator("tr").all()[1:]]
        listed = sorted(int(row.split()[0]) for row in rows)
        check(listed == want["front"], f"the experiment's description lists the front: trials {listed}")
        if shots:
            page.screenshot(path=shots / "browser-experiment.png")
        browser.close()

    print(f"console messages ({len(console)}):")
    for line in console:
        print(f"  {line[:300]}")
    print(f"responses over 400 ({len(refused)}): {', '.join(refused) or 'none'}")
    print(f"requests blocked ({len(blocked)}): {', '.join(blocked) or 'none'}")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep the study, its MLflow store and screenshots here")
    parser.add_argument("--chromium", help="a Chromium executable (default: Playwright's, else the system's)")
    parser.add_argument("--port", type=int, default=None, help="the dashboard's port (default: a free one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        folder = (args.work or Path(scratch)).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[MLFLOW_HOME_ENV] = str(folder / "mlflow")  # the study's, the dashboard's and ours
        started = time.monotonic()
        run_study(folder)
        print(f"study {STUDY!r} in {folder} ({time.monotonic() - started:.0f} s)")
        want = expected(folder)
        with dashboard(folder, args.port or free_port()) as address:
            failures = check_in_browser(address, want, args.chromium, folder if args.work else None)
    print(f"{len(failures)} check(s) failed" if failures else "every check passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
