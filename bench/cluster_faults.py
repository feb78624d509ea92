"""A study on several machines, simulated on one host, and the faults a cluster has (issue 29).

The services are the ones deploy/compose.yaml runs, from the registries' packages instead of
containers: this machine's PostgreSQL for the study (a fresh schema per run), `mlflow server`
with proxied artifacts for the runs, and N workers, each in a folder of its own and, run as
root, in namespaces of its own: its own hostname (no worker can see another's process: only
PostgreSQL's heartbeat tells them apart) and the other nodes' folders hidden (the base that
one node trains reaches the others through MLflow). The workers start in the same second
on a study that does not exist yet, with the study file and nothing else. Then:

  1. kill -9 of the worker running a candidate;
  2. the tracking server stopped for 20 s mid-trial, then started again;
  3. PostgreSQL restarted mid-trial.

It records every worker's exit code and last line, and counts what a study must never have:
points lost (no completed trial), points trained to the end twice, trials left RUNNING, MLflow
runs left RUNNING, and parent runs other than one.

    bash .ci/postgres   # PostgreSQL and the test role
    .venv/bin/python bench/cluster_faults.py --work /tmp/nar-cluster
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import yaml

POSTGRES = "postgresql://nar:nar-test-only@127.0.0.1:5432/nar_test"  # .ci/postgres's throwaway role
PHIS = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
NAR = [sys.executable, "-m", "nar_search.search.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/nar-cluster"), help="a new or empty folder")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--postgres", default=POSTGRES, help="a database this run may add a schema to")
    parser.add_argument("--outage", type=float, default=20.0, help="seconds the tracking server is down")
    args = parser.parse_args()
    work = args.work.resolve()
    if work.exists() and any(work.iterdir()):
        sys.exit(f"{work} is not empty: give --work a new or empty folder")
    work.mkdir(parents=True, exist_ok=True)
    events: list[dict] = []
    cluster = Cluster(work, args.postgres)
    try:
        cluster.start_services()
        workers = cluster.start_workers(args.workers)
        events.append(cluster.kill_a_worker(workers))
        events.append(cluster.tracking_outage(workers, args.outage))
        events.append(cluster.restart_postgres(workers))
        ends = cluster.wait(workers)
        results = {"events": events, "workers": ends, **cluster.count()}
    finally:
        cluster.stop()
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


class Cluster:
    def __init__(self, work: Path, postgres: str) -> None:
        from sqlalchemy.engine import make_url

        self.work, self.postgres = work, postgres
        self.schema = f"cluster_{uuid.uuid4().hex[:8]}"
        url = make_url(postgres)
        self.password = url.password or ""
        # The workers' URL carries no password: PGPASSWORD gives it, as on a cluster.
        self.storage = f"{url.set(password=None).render_as_string(hide_password=False)}?options=-csearch_path%3D{self.schema}"
        self.port = _free_port()
        self.tracking = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PGPASSWORD": self.password, "OMP_NUM_THREADS": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
        self.server: subprocess.Popen | None = None
        self.killed: set[tuple[str, int]] = set()  # (host, pid) of the workers killed
        self.struck = 0  # the last trial a fault struck
        self.started = time.monotonic()

    # services
    def start_services(self) -> None:
        import psycopg

        with psycopg.connect(self.postgres, autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {self.schema}")
        subprocess.run([*NAR, "data", "synth-patches", "--out", str(self.work / "patches"), "--n", "240", "--seed", "3"], check=True)
        study = {
            "name": "cluster",
            "model": "resnet18",
            "input_size": 48,
            "data": {"source": str(self.work / "patches")},
            "training": {"epochs": 4, "batch_size": 32, "accelerator": "cpu", "patience": None},
            "search": {"phi": PHIS},
            "sampler": "grid",
            "n_trials": len(PHIS),
            "confirm": {"seeds": 2, "max_auc_drop": 1.0},
        }
        (self.work / "study.yaml").write_text(yaml.safe_dump(study))
        self.start_server()

    def start_server(self) -> None:
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        command += ["--backend-store-uri", f"sqlite:///{self.work / 'mlflow.db'}", "--artifacts-destination", str(self.work / "artifacts")]
        log = (self.work / "mlflow-server.log").open("a")
        env = {**self.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.tracking}/health", timeout=1)
                return
            except OSError:
                time.sleep(0.5)
        raise SystemExit("the MLflow server did not start: see mlflow-server.log")

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            self.server.wait(timeout=60)

    # workers
    def start_workers(self, count: int) -> list[dict]:
        isolated = os.geteuid() == 0 and shutil.which("unshare") is not None
        folders = [self.work / f"node-{index}" for index in range(count)]
        for folder in folders:
            folder.mkdir()
        workers = []
        for index, folder in enumerate(folders):
            command = [*NAR, "study", "worker", str(self.work / "study.yaml"), "--storage", self.storage, "--tracking-uri", self.tracking]
            if isolated:
                # A hostname of its own (no worker sees another's process) and the other nodes'
                # folders hidden (the base another node trained comes through MLflow).
                hide = " && ".join(f"mount -t tmpfs none {other}" for other in folders if other != folder)
                script = f'hostname node-{index} && {hide} && exec "$@"'
                command = ["unshare", "--uts", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *command]
            log = (folder / "worker.log").open("w")
            process = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=self.env)
            workers.append({"index": index, "host": f"node-{index}" if isolated else socket.gethostname(), "process": process})
        return workers

    def _study(self):
        import optuna

        from nar_search.search.study.storage import open_storage

        return optuna.load_study(study_name="cluster", storage=open_storage(self.storage_with_password()))

    def storage_with_password(self) -> str:
        return self.storage.replace("postgresql://nar@", f"postgresql://nar:{self.password}@", 1)

    def running_candidate(self, workers: list[dict], timeout: float = 600):
        """A candidate trial that a living worker has claimed and is training, later than any
        trial an earlier fault struck."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(w["process"].poll() is not None for w in workers):
                raise SystemExit("every worker ended before the faults: see node-*/worker.log")
            try:
                for trial in self._study().get_trials(deepcopy=False):
                    attrs = trial.user_attrs
                    claimed = {"worker", "mlflow_run_id"} <= attrs.keys()
                    if trial.state.name == "RUNNING" and not attrs.get("baseline") and claimed and trial.number > self.struck:
                        owner = attrs["worker"]
                        if (owner["host"], owner["pid"]) not in self.killed:
                            self.struck = trial.number
                            return trial
            except Exception:  # the study is not made yet, or the database restarts
                pass
            time.sleep(0.5)
        raise SystemExit("no candidate ran in time")

    def kill_a_worker(self, workers: list[dict]) -> dict:
        trial = self.running_candidate(workers)
        owner = trial.user_attrs["worker"]
        victim = next(w for w in workers if w["host"] == owner["host"] and w["process"].pid == owner["pid"])
        victim["process"].send_signal(signal.SIGKILL)
        self.killed.add((owner["host"], owner["pid"]))
        return self._event(f"kill -9 of node-{victim['index']}, running trial {trial.number}")

    def tracking_outage(self, workers: list[dict], seconds: float) -> dict:
        trial = self.running_candidate(workers)
        self.stop_server()
        time.sleep(seconds)
        self.start_server()
        return self._event(f"tracking server stopped for {seconds:g} s while trial {trial.number} ran")

    def restart_postgres(self, workers: list[dict]) -> dict:
        trial = self.running_candidate(workers)
        subprocess.run(["pg_ctlcluster", "15", "main", "restart"], check=True)
        return self._event(f"PostgreSQL restarted while trial {trial.number} ran")

    def _event(self, what: str) -> dict:
        event = {"at_s": round(time.monotonic() - self.started, 1), "event": what}
        print(f"[{event['at_s']:7.1f} s] {what}", flush=True)
        return event

    def wait(self, workers: list[dict], timeout: float = 1800) -> list[dict]:
        deadline = time.monotonic() + timeout
        ends = []
        for worker in workers:
            try:
                code = worker["process"].wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker["process"].kill()
                code = "timed out"
            lines = (self.work / f"node-{worker['index']}" / "worker.log").read_text().strip().splitlines()
            ends.append({"worker": f"node-{worker['index']}", "exit": code, "last line": lines[-1] if lines else ""})
        self._event("every worker ended")
        return ends

    # the verdict
    def count(self) -> dict:
        from optuna.trial import TrialState

        from nar_search.search.study.confirmation import CONFIRMS_TAG
        from nar_search.search.study.record import SeedRecord, StudyRecord, TrialRecord
        from nar_search.search.tracking import Tracker

        study = self._study()
        trials = study.get_trials(deepcopy=False)
        trained = Counter(t.params["phi"] for t in trials if t.state == TrialState.COMPLETE and TrialRecord.of(t).reused_from is None)
        complete = Counter(t.params["phi"] for t in trials if t.state == TrialState.COMPLETE)
        tracker = Tracker(self.tracking)
        runs = tracker.client.search_runs([tracker.experiment_id("cluster")], max_results=1000)
        parent = StudyRecord.of(study).mlflow_parent_run_id
        confirming = [r for r in runs if CONFIRMS_TAG in r.data.tags and r.info.status == "FINISHED"]
        seeds_run = Counter((r.data.tags[CONFIRMS_TAG], r.data.tags["seed"]) for r in confirming)
        return {
            "trials": dict(Counter(t.state.name for t in trials)),
            "points lost": sum(complete[phi] == 0 for phi in PHIS),
            "points trained twice": sum(count > 1 for count in trained.values()),
            "trials left RUNNING": sum(t.state == TrialState.RUNNING for t in trials),
            "MLflow runs left RUNNING": sum(r.info.status == "RUNNING" for r in runs),
            "parent runs": sum(r.data.tags.get("nar.role") == "study" for r in runs),
            "parent run status": tracker.client.get_run(parent).info.status if parent else None,
            "confirmation seeds trained": sum(seed.done for seed in SeedRecord.all_of(study)),
            "confirmation seeds trained twice": sum(count > 1 for count in seeds_run.values()),
            "front published": bool(StudyRecord.of(study).pareto_trials),
            "nodes that fetched the base from MLflow": sum(any((f / "runs" / "cluster").glob("base-*")) for f in self.work.glob("node-*")),
            "wall_s": round(time.monotonic() - self.started, 1),
        }

    def stop(self) -> None:
        self.stop_server()
        subprocess.run(["pg_ctlcluster", "15", "main", "start"], check=False, capture_output=True)
        try:
            import psycopg

            with psycopg.connect(self.postgres, autocommit=True) as connection:
                connection.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        except Exception as error:  # the figures are written; a schema left behind is said, not fatal
            print(f"schema {self.schema} left in place: {error}", file=sys.stderr)


def table(results: dict) -> str:
    rows = ["| fault | at |", "|---|--:|", *(f"| {e['event']} | {e['at_s']} s |" for e in results["events"])]
    rows += ["", "| worker | exit | last line |", "|---|---|---|"]
    rows += [f"| {w['worker']} | {w['exit']} | {w['last line'][:120]} |" for w in results["workers"]]
    rows += ["", "| count | value |", "|---|--:|"]
    rows += [f"| {key} | {value} |" for key, value in results.items() if key not in ("events", "workers")]
    return "\n".join(rows)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    main()
