"""What the synthetic patches and slides are made with by default: their difficulty levels'
names and their resolution, apart from their numpy code so that `nar data synth-patches --help`
can show them without loading it."""

from typing import Literal

DifficultyName = Literal["easy", "default", "hard"]
SYNTHETIC_MPP = 0.5  # µm per pixel: a 20x scan, 100 px to a 50 µm patch
