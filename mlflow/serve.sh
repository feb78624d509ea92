#!/usr/bin/env bash
# The MLflow UI over NAR Search's local store (mlflow/store, git-ignored), on 127.0.0.1.
#   mlflow/serve.sh [PORT]        — `nar dashboard` does the same.
# To share it on a network, set HOST deliberately (e.g. HOST=0.0.0.0) and mind who can reach it.
# This folder must never hold an __init__.py: a package named mlflow would shadow the real one.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$here/store/artifacts"
exec "${MLFLOW:-$here/../.venv/bin/mlflow}" server \
  --backend-store-uri "sqlite:///$here/store/mlflow.db" \
  --artifacts-destination "$here/store/artifacts" \
  --host "${HOST:-127.0.0.1}" --port "${1:-5000}"
