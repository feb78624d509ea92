#!/usr/bin/env bash
# The MLflow UI over NAR Search's local store (mlflow/store, git-ignored), on 127.0.0.1:
#   mlflow/serve.sh [PORT]        — `nar dashboard --port PORT` with this folder as NAR_MLFLOW_HOME.
# It serves this machine only: from another, reach it through an SSH tunnel
# (ssh -L 5000:127.0.0.1:5000 THIS-HOST). Ctrl-C or SIGTERM stops it and its MLflow server.
# This folder must never hold an __init__.py: a package named mlflow would shadow the real one.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
NAR_MLFLOW_HOME="${NAR_MLFLOW_HOME:-$here}" exec "${NAR:-$here/../.venv/bin/nar}" dashboard --port "${1:-5000}"
