"""What an exported TIL classifier takes in and what its output means to the maps: the
preprocessing training fed it, the TIL class and the threshold that calls a patch TIL-positive."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np

from nar_search.data.sources import CLASS_NAMES, PATCH_MEAN, PATCH_STD, PATCH_UM
from nar_search.models.export import Preprocessing
from nar_search.models.spec import ArchSpec

TIL_CLASS = "til-positive"
TIL_THRESHOLD = 0.5


def training_preprocessing(spec: ArchSpec) -> Preprocessing:
    """What PatchDataModule fed the network in training: 50 µm patches at its input side,
    normalised by the data module's mean and std, classes in label order."""
    return Preprocessing(spec.input_size, PATCH_MEAN, PATCH_STD, CLASS_NAMES, PATCH_UM)


def til_calls(probabilities: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Each patch's call (patches x classes probabilities in, bool out): TIL-positive at
    TIL_THRESHOLD or above. Engines are compared by these calls, which are what maps show."""
    return cast(np.ndarray, probabilities[:, list(class_names).index(TIL_CLASS)] >= TIL_THRESHOLD)
