"""Issue 15, item 1: the CLI and every --help start without the heavy libraries (the commands load
what they use).
Checked in fresh processes, as the test session itself has them all loaded; by the modules
loaded, not by timing, so that a busy machine cannot fail it."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "timm", "lightning", "mlflow", "optuna", "sklearn", "thop", "openslide")


def test_importing_the_cli_loads_no_heavy_library():
    code = f"import nar_search.search.cli.app, sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


HELPS = [[], ["study"], ["study", "run"], ["data", "synth-patches"], ["train"], ["predict"]]


@pytest.mark.parametrize("command", HELPS)
def test_help_answers_without_heavy_libraries(command):
    code = (
        "import runpy, sys\n"
        "try:\n"
        "    runpy.run_module('nar_search.search.cli', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        f"    print(exit.code or 0, sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip().endswith("0 []"), result.stdout[-2000:] + result.stderr[-2000:]
    assert "Usage" in result.stdout


@pytest.mark.slow
def test_prediction_loads_no_training_library():
    """`nar predict` costs torch and the inference engines, not Lightning, MLflow or Optuna."""
    code = "import nar_search.prediction.run, sys\nprint(sorted(m for m in ('lightning', 'mlflow', 'optuna') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
