"""The study's Pareto views as a user sees them: in the MLflow UI and optuna-dashboard, in a real
browser, offline.

Runs a tiny study (resnet18 at 48 px on 72 synthetic patches; NAR, IR and ResRep; 2 epochs in
2 rungs, so that some candidates stop at a rung) with its own MLflow home, starts `nar
dashboard` on 127.0.0.1 and, in a headless Chromium that may reach nothing but 127.0.0.1:

- opens the study's run in the MLflow UI and its pareto.html artifact in the UI's preview (a
  blob: page in a frame sandboxed with `allow-scripts` alone); counts the points drawn (one per
  trained or stopped trial, each labelled and linked to its run) and the front's runs listed
  beside the chart (trial and run id); hovers one (its details);
- clicks it: the UI's page stays (the sandbox refuses to lead it away) and the page shows the
  run's id and address and copies the address (read back from the clipboard); a click on a
  trial in the list and the copy button do the same; Ctrl-click and middle-click open the run
  in a new tab; the copied address, pasted into the UI's page, opens the run, named by its trial;
- opens the same page as a file (the links then lead nowhere: a click shows and copies the
  run's id), and as a page of its own out of the sandbox (a click opens the run);
- reads the experiment's description (the front's table);
- starts `nar dashboard --optuna` and finds, on the study's page, the plot of val AUC against
  GFLOPs with the baseline named, and the note naming the baseline; reads which objective
  optuna-dashboard's own Pareto Front plot puts across.

Prints what the browser saw, its console errors and the requests it blocked; exits 1 when a
check fails.

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

from nar_search.search.tracking import MLFLOW_HOME_ENV, UI_VIEW, run_link

VIEWPORT = {"width": 1400, "height": 1000}
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
def dashboard(folder: Path, port: int, *options: str, ready: str = "/health") -> Iterator[str]:
    """`nar dashboard OPTIONS` on 127.0.0.1:`port` once `ready` answers, until the block ends (it
    and the server it starts)."""
    log = (folder / f"dashboard-{port}.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "nar_search.search.cli", "dashboard", *options, "--port", str(port)],
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
                urllib.request.urlopen(f"{address}{ready}", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the dashboard did not start: see {log.name}") from None
                time.sleep(1)
        yield address
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def expected(folder: Path) -> dict:
    """What the pages should show, from the study and the MLflow store themselves."""
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
    (folder / "downloaded").mkdir(exist_ok=True)
    return {
        "experiment": experiment,
        "parent": parent,
        "runs": {t.number: t.user_attrs["mlflow_run_id"] for t in drawn},
        "stopped": sorted(t.number for t in pareto.stopped(study)),
        "front": sorted(t.number for t in pareto.front(study)),
        "baseline": pareto.baseline(study).number,
        "names": {t.number: client.get_run(t.user_attrs["mlflow_run_id"]).info.run_name for t in drawn},
        "file": Path(client.download_artifacts(parent, "pareto.html", str(folder / "downloaded"))),
    }


def chromium_path(playwright, given: str | None) -> str | None:
    """The Chromium to run: the one asked for, Playwright's own, else the system's."""
    if given or Path(playwright.chromium.executable_path).exists():
        return given
    return shutil.which("chromium") or shutil.which("chromium-browser")


# What a headless Chromium needs as root, and to keep it from calling out (there is no network).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REFUSED = ("Unsafe attempt to initiate navigation", "Blocked opening")  # what Chromium logs when a sandbox refuses


def local(url: str) -> bool:
    address = urlsplit(url)
    return address.hostname == LOCAL or address.scheme == "file"


class Checks:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def __call__(self, ok: bool, what: str) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            self.failures.append(what)


def check_mlflow_ui(context, address: str, want: dict, check: Checks, console: list[str], shots: Path | None) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = context.new_page()
    artifacts = f"{address}/#/experiments/{want['experiment']}/runs/{want['parent']}/artifacts{UI_VIEW}"
    page.goto(artifacts)
    page.get_by_text("pareto.html").first.click(timeout=120_000)
    view = page.frame_locator("iframe.mlflow-html-iframe")
    print(f"the preview's frame: sandbox={page.locator('iframe.mlflow-html-iframe').get_attribute('sandbox')!r}")
    points = view.locator("a.point")
    points.first.wait_for(timeout=60_000)
    labels = {int(points.nth(i).get_attribute("data-trial")): points.nth(i) for i in range(points.count())}
    print(f"pareto.html in the UI's preview: {points.count()} points, trials {sorted(labels)}")
    check(points.count() == len(want["runs"]), f"one point per trained or stopped trial ({len(want['runs'])})")
    check(all(labels[n].locator("text.label").text_content() == str(n) for n in labels), "each point labelled with its trial number")
    run_url = {n: f"{address}/{run_link(want['experiment'], run)}" for n, run in want["runs"].items()}
    links = {n: point.get_attribute("href") for n, point in labels.items()}
    check(links == run_url, "each point links to its run's page in the UI")
    stopped = sorted(n for n, point in labels.items() if "stopped" in point.get_attribute("class").split())
    check(stopped == want["stopped"], f"the trials stopped at a rung drawn apart: {stopped}")
    check(view.locator("polyline.front").count() == (1 if want["front"] else 0), f"the front drawn (trials {want['front']})")
    rows = view.locator("aside table").first.locator("tbody tr")
    listed = {int(rows.nth(i).get_attribute("data-trial")): rows.nth(i).locator("code").inner_text() for i in range(rows.count())}
    check(listed == {n: want["runs"][n] for n in want["front"]}, f"beside the chart, the front's trials and run ids: {sorted(listed)}")

    number = want["front"][0]
    target = labels[number].locator("circle, polygon").first
    target.hover()
    tip = view.locator("#tip")
    check(tip.is_visible() and tip.inner_text().startswith(f"trial {number} · "), "hovering shows the point's details")
    print("    " + tip.inner_text().replace("\n", "\n    "))

    page.evaluate("navigator.clipboard.writeText('')")
    seen = len(console)
    target.click()
    page.wait_for_timeout(500)
    shown = {"id": view.locator("#run-id").input_value(), "url": view.locator("#run-url").input_value()}
    copied = page.evaluate("navigator.clipboard.readText()")
    print(f"  a plain click on trial {number}: {shown}; the page says {view.locator('#copied').inner_text()!r}; clipboard {copied!r}")
    check(page.url == artifacts, "a plain click leaves the UI's page where it is (the sandbox would not let it go)")
    check(shown == {"id": want["runs"][number], "url": run_url[number]}, "… and shows the run's id and the address of its page")
    check(copied == run_url[number], "… and copies the address (execCommand in a click: the sandbox allows it)")
    refused = [line for line in console[seen:] if any(text in line for text in REFUSED)]
    check(not refused, f"… and asks the sandbox for nothing it refuses {refused or ''}")
    if shots:
        page.screenshot(path=shots / "browser-pareto.png")

    other = want["front"][-1]
    view.locator(f'a.run[data-trial="{other}"]').first.click()
    check(view.locator("#run-id").input_value() == want["runs"][other], f"a click on trial {other} in the list shows its run")
    view.locator('button[data-copy="run-id"]').click()
    check(page.evaluate("navigator.clipboard.readText()") == want["runs"][other], "the copy button copies the run id")

    for how, click in (("Ctrl-click", {"modifiers": ["Control"]}), ("middle-click", {"button": "middle"})):
        try:
            with context.expect_page(timeout=10_000) as opened:
                target.click(**click)
            run_page = opened.value
            run_page.get_by_text(want["names"][number]).first.wait_for(timeout=60_000)
            check(run_page.url == run_url[number], f"{how} opens the run in a new tab, named {want['names'][number]!r}")
            run_page.close()
        except PlaywrightTimeout as error:  # no tab: the check fails, the bench goes on
            check(False, f"{how} opens the run in a new tab ({str(error).splitlines()[0]})")
    check(page.url == artifacts, "… and the UI's page stays")

    page.goto(copied)  # as a user pastes the copied address
    page.get_by_text(want["names"][number]).first.wait_for(timeout=60_000)
    check(
        page.url == run_url[number] and want["names"][number].startswith(f"trial {number} "),
        f"the copied address opens the run in the UI: {want['names'][number]!r}",
    )

    page.goto(f"{address}/#/experiments/{want['experiment']}/runs{UI_VIEW}")
    table = page.locator("table").filter(has_text="candidate").first  # the front's; the confirmed front's follows
    table.wait_for(state="attached", timeout=60_000)
    rows_text = [row.inner_text() for row in table.locator("tr").all()[1:]]
    described = sorted(int(row.split()[0]) for row in rows_text)
    check(described == want["front"], f"the experiment's description lists the front: trials {described}")
    if shots:
        page.screenshot(path=shots / "browser-experiment.png")

    # Every trained trial's network is a LoggedModel of its run, named as the run ('.' is ',').
    page.set_viewport_size({"width": 3000, "height": 1000})  # the metric columns lie right of the names
    page.goto(f"{address}/#/experiments/{want['experiment']}/models{UI_VIEW}")
    models = [want["names"][n].replace(".", ",") for n in want["runs"] if n not in want["stopped"]]
    page.get_by_text(models[0], exact=True).first.wait_for(timeout=60_000)
    listed_models = [name for name in models if page.get_by_text(name, exact=True).count()]
    check(listed_models == models, f"the Models tab lists every trained trial's network: {len(listed_models)} of {len(models)}")
    check(page.get_by_text("val_auc").count() > 0, "… with its val_auc")
    if shots:
        page.screenshot(path=shots / "browser-models.png")
    page.set_viewport_size(VIEWPORT)

    # Out of the sandbox: the page opened as a page of its own, from a blob: of the UI's origin.
    artifact = f"{address}/get-artifact?path=pareto.html&run_uuid={want['parent']}"
    page.goto(address)
    page.evaluate(
        "async (url) => { const html = await (await fetch(url)).text();"
        " location.href = URL.createObjectURL(new Blob([html], {type: 'text/html'})); }",
        artifact,
    )
    page.locator("a.point").first.wait_for(timeout=30_000)
    page.locator(f'a.point[data-trial="{number}"]').locator("circle, polygon").first.click()
    page.get_by_text(want["names"][number]).first.wait_for(timeout=60_000)
    check(page.url == run_url[number], "out of the sandbox (the page on its own, not a file), a click opens the run")
    page.close()


def check_file(context, want: dict, check: Checks) -> None:
    """The page downloaded and opened as a file: the UI's address is unknown there."""
    page = context.new_page()
    page.goto(want["file"].as_uri())
    number = want["front"][0]
    page.locator(f'a.point[data-trial="{number}"]').locator("circle, polygon").first.click()
    page.wait_for_timeout(500)
    copied = page.evaluate("navigator.clipboard.readText()")
    shown = (page.locator("#run-id").input_value(), page.locator("#run-url").input_value())
    print(f"  opened as a file, a click on trial {number}: {shown}, copied {copied!r}, at {page.url}")
    check(
        page.url == want["file"].as_uri() and shown[0] == copied == want["runs"][number],
        "opened as a file, a click stays, shows the run's id and copies it",
    )
    page.close()


def check_optuna_dashboard(context, address: str, want: dict, check: Checks, shots: Path | None) -> None:
    page = context.new_page()
    page.goto(f"{address}/dashboard/studies/1")
    plot = page.locator('[id^="user-defined-plot:"]')
    plot.locator(".gtitle").wait_for(timeout=60_000)
    title, axis = plot.locator(".gtitle").text_content(), plot.locator(".xtitle").text_content()
    legend = plot.locator(".legendtext").all_text_contents()
    print(f"optuna-dashboard, the study's page: a plot {title!r}, x axis {axis!r}, legend {legend}")
    check(axis.startswith("GFLOPs") and plot.locator(".ytitle").text_content() == "val AUC", "its plot: GFLOPs across, val AUC up")
    check("baseline (ϕ = 0)" in legend, "… the baseline named in its legend")
    own = page.locator("fieldset").filter(has_text="Objective X:").get_by_role("combobox").text_content()
    print(f"  optuna-dashboard's own Pareto Front plot, atop the page: Objective X {own!r} by default")
    if shots:
        page.screenshot(path=shots / "browser-optuna.png", full_page=True)
    page.goto(f"{address}/dashboard/studies/1/note")
    note = page.get_by_text(f"Trial {want['baseline']} is the baseline")
    note.first.wait_for(timeout=30_000)
    print(f"  the study's note: {note.first.locator('xpath=..').text_content()!r}")
    check(note.count() > 0, "the study's note names the baseline")
    page.close()


def check_in_browser(mlflow: str, optuna_address: str, want: dict, chromium: str | None, shots: Path | None) -> list[str]:
    from playwright.sync_api import sync_playwright

    check = Checks()
    console, blocked, refused = [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(playwright, chromium), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=VIEWPORT)
        context.grant_permissions(["clipboard-read", "clipboard-write"])  # for the bench to read what the page copied
        # Offline, as on a hospital network: nothing but the dashboards and this machine's files answers.
        context.route(
            "**/*",
            lambda route: route.continue_() if local(route.request.url) else (blocked.append(route.request.url), route.abort()),
        )
        context.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        context.on("weberror", lambda error: console.append(f"uncaught: {error.error}"))
        context.on("response", lambda response: refused.append(f"{response.status} {response.url}") if response.status >= 400 else None)
        print(f"Chromium {browser.version}, the MLflow UI at {mlflow}")
        check_mlflow_ui(context, mlflow, want, check, console, shots)
        check_file(context, want, check)
        print(f"optuna-dashboard at {optuna_address}")
        check_optuna_dashboard(context, optuna_address, want, check, shots)
        browser.close()

    print(f"console messages ({len(console)}):")
    for line in console:
        print(f"  {line[:300]}")
    print(f"responses over 400 ({len(refused)}): {', '.join(refused) or 'none'}")
    print(f"requests blocked ({len(blocked)}): {', '.join(blocked) or 'none'}")
    return check.failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep the study, its MLflow store and screenshots here")
    parser.add_argument("--chromium", help="a Chromium executable (default: Playwright's, else the system's)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        folder = (args.work or Path(scratch)).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[MLFLOW_HOME_ENV] = str(folder / "mlflow")  # the study's, the dashboard's and ours
        started = time.monotonic()
        run_study(folder)
        print(f"study {STUDY!r} in {folder} ({time.monotonic() - started:.0f} s)")
        want = expected(folder)
        config = str(folder / f"{STUDY}.yaml")
        with (
            dashboard(folder, free_port()) as mlflow,
            dashboard(folder, free_port(), config, "--optuna", ready="/api/studies") as optuna_address,
        ):
            failures = check_in_browser(mlflow, optuna_address, want, args.chromium, folder if args.work else None)
    print(f"{len(failures)} check(s) failed" if failures else "every check passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
