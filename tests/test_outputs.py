"""Issue 13, item 6: values that would fail deep inside the work (a 30 GB allocation, a missing
GPU) are refused by `nar train` up front, in one line and exit 2. The output safety of
`nar export` and `nar predict` is tested with their other behaviour, in test_export.py and
test_predict.py."""

import pytest
import torch
from conftest import run_cli


@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("--input-size", 100000, "at most 1024 px"),
        ("--accelerator", "gpu", "no CUDA GPU"),
        ("--accelerator", "cuda", "use cpu or auto"),
    ],
)
def test_nar_train_refuses_impossible_values_in_one_line(option, value, expected, patch_folder, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a machine with a GPU
    monkeypatch.setattr("nar_search.search.training_run.train_and_record", lambda *args, **kwargs: pytest.fail("training started"))
    assert run_cli("train", "--data", patch_folder, "--model", "resnet18", option, value, "--epochs", 1) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and expected in error and len(error.splitlines()) == 1
