"""Small synthetic data shared by the tests (built once per test session), and `run_cli`."""

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tifffile

from nar_search.data.synth_patches import write_patches
from nar_search.data.synth_slide import write_synthetic_slide

if TYPE_CHECKING:
    from nar_search.search.tracking import Tracker


def run_cli(*args: object) -> int:
    """`nar ARGS` run in this process: its exit code."""
    from nar_search.search.cli.app import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in args])
    return exit_info.value.code or 0


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2048 × 1536 px slide at 0.5 µm/px (1 × 0.77 mm) with its ground-truth mask."""
    path = tmp_path_factory.mktemp("slide") / "slide.tiff"
    write_synthetic_slide(path, width=2048, height=1536, mpp=0.5, seed=0, tile=256)
    return path


@pytest.fixture(scope="session")
def patch_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 synthetic patches from 6 slides, with manifest.csv."""
    folder = tmp_path_factory.mktemp("patches")
    write_patches(folder, n=60, seed=0, slides=6)
    return folder


@pytest.fixture(scope="session")
def slide_without_mpp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiled TIFF that OpenSlide opens as a generic slide but that records no resolution."""
    path = tmp_path_factory.mktemp("no-mpp") / "no-mpp.tiff"
    tifffile.imwrite(path, np.full((256, 256, 3), 200, np.uint8), tile=(128, 128), photometric="rgb", metadata=None)
    return path


@pytest.fixture(scope="module")
def patches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """72 synthetic patches for the study tests (a module may define its own)."""
    folder = tmp_path_factory.mktemp("patches")
    write_patches(folder, n=72, seed=1)
    return folder


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # runs/ and studies/ land here
    return tmp_path


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> "Tracker":
    """A local MLflow store of the module's own (a module may define its own)."""
    from nar_search.search.tracking import Tracker

    return Tracker(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")
