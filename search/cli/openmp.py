"""OpenMP's wait policy for `nar predict`, which libgomp reads once, when torch loads it: this
module imports nothing heavy so that it can run first."""

from __future__ import annotations

import os


def let_openmp_threads_sleep() -> None:
    """Make torch's OpenMP threads sleep as soon as a parallel region ends, unless the user set
    OMP_WAIT_POLICY. Spinning threads (libgomp's default) keep every core busy between a
    network's layers, so the workers that read slide patches fight them for the CPU: sleeping
    ones leave the readers the gaps (a few per cent more patches per second on two cores).
    Training runs ~8 % slower with it (bench/README.md), so only prediction asks for it. Has no
    effect once torch is imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
