"""A run's patches as MLflow Datasets: one per split, named by the source and the split, with a
digest of which patches it holds and a profile of their counts per class and slides."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from mlflow.entities import Dataset

from nar_search.data.sources import CLASS_NAMES

if TYPE_CHECKING:
    from nar_search.lightning_modules.datamodule import PatchDataModule

# The UI's name for each split's role (mlflow.data.context).
CONTEXTS = {"train": "training", "val": "validation", "test": "test"}


def split_datasets(source: Path, datamodule: PatchDataModule) -> dict[str, Dataset]:
    """{split: its Dataset} of a set-up data module. A digest changes with the patches a split
    holds and their labels, not with where the source lies: two machines with one copy of the
    data log one dataset."""
    dataset = datamodule.dataset
    if dataset is None:
        raise RuntimeError("set the data module up first")
    # Patches are named from where their source lies: a folder, or the folder of a list (labels,
    # manifest, slide coordinates) that names them.
    root = os.path.realpath(source if Path(source).is_dir() else Path(source).parent) + os.sep
    identities = np.array([identity.removeprefix(root) for identity in dataset.identities()])
    labels = np.array(dataset.labels)
    summaries = {summary.name: summary for summary in datamodule.summary()}
    datasets = {}
    for split, indices in datamodule.splits.items():
        digest = hashlib.sha256()
        for identity, label in sorted(zip(identities[indices].tolist(), labels[indices].tolist(), strict=True)):
            digest.update(f"{identity}\t{label}\n".encode())
        summary = summaries[split]
        profile = {
            "patches": summary.patches,
            "per_class": dict(zip(CLASS_NAMES, summary.per_class, strict=True)),
            "slides": summary.slides,
        }
        datasets[split] = Dataset(
            name=f"{Path(source).name} {split}",
            digest=digest.hexdigest()[:16],
            source_type="local",
            source=json.dumps({"uri": Path(source).resolve().as_uri()}),
            profile=json.dumps(profile),
        )
    return datasets
