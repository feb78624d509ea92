"""`nar demo`: synthetic data and a small study on the embedded defaults, start to finish."""

from __future__ import annotations

from pathlib import Path

from search.console import console

from data.synth_patches import write_patches
from search.study_cli import run_command

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def demo_command() -> None:
    """Make synthetic TIL patches, run the demo study (SQLite + local MLflow), print the front."""
    patches = Path("demo/patches")
    if not (patches / "manifest.csv").exists():
        console.print("rendering 400 synthetic TIL patches into demo/patches")
        write_patches(patches, n=400, seed=0)
    run_command(config_file=DEMO_CONFIG, data=patches)
