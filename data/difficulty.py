"""The names of the synthetic patches' difficulty levels, apart from their numpy code so that
`nar data synth-patches --help` can list them without loading it."""

from typing import Literal

DifficultyName = Literal["easy", "default", "hard"]
