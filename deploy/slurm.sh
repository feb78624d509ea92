#!/usr/bin/env bash
# One study on a SLURM cluster: an array of workers, each `nar study worker` on one node.
#   NAR_STORAGE=postgresql://nar@db-host/nar NAR_TRACKING_URI=http://mlflow-host:5000 \
#   STUDY_FILE=/shared/study.yaml sbatch deploy/slurm.sh
# PostgreSQL's password comes from ~/.pgpass (or PGPASSWORD), an MLflow server's login from
# MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD: never from this file or the study file.
# The study file and its patches live on the shared filesystem; networks reach MLflow.
#SBATCH --job-name=nar-study
#SBATCH --array=0-7
#SBATCH --cpus-per-task=8
#SBATCH --gres=gpu:1
#SBATCH --time=12:00:00
# SIGTERM to this script (B:, it has no job steps) two minutes before the time limit: the
# running trial is failed, its run KILLED, and a worker still running (or the next one
# started) trains it again.
#SBATCH --signal=B:TERM@120
set -euo pipefail
: "${NAR_STORAGE:?the study storage, postgresql://user@host/db}"
: "${NAR_TRACKING_URI:?the MLflow tracking server, http://host:5000}"
: "${STUDY_FILE:?the study file on the shared filesystem}"
# runs/ on node-local disk: a worker keeps only the base there, each candidate goes to MLflow.
cd "${SLURM_TMPDIR:-${TMPDIR:-/tmp}}"
exec nar study worker "$STUDY_FILE" --storage "$NAR_STORAGE" --tracking-uri "$NAR_TRACKING_URI"
