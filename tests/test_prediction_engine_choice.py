"""--engine auto (issue 30, item 5): the engine measured fastest of those that make float32's TIL
calls, INT8 never when it is slower (its calibration counted), said in one line and recorded in
summary.json, within the time it is given."""

import json
import re

import numpy as np
import torch
from conftest import run_cli
from test_predict import detector  # noqa: F401  (the module's fixture: a known TIL detector, exported)

from nar_search.prediction import engine_choice
from nar_search.prediction.engine_choice import AGREEMENT_NEEDED, Rounds, Trial, pick


def predict_auto(detector, slide, out, capsys) -> tuple[list[str], dict]:  # noqa: F811
    """Run nar predict with the default engine: its console lines about the engine, and what
    summary.json records of the choice."""
    assert run_cli("predict", slide, "--model", detector, "--out", out, "--workers", 0) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("engine:")]
    model = json.loads((out / slide.stem / "summary.json").read_text())["model"]
    assert model["engine_choice"]["engine"] == model["engine"]
    return lines, model["engine_choice"]


def test_auto_picks_an_engine_and_records_why_within_its_time(detector, synthetic_slide, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setattr(engine_choice, "CHOICE_SECONDS", 4.0)
    lines, choice = predict_auto(detector, synthetic_slide, tmp_path, capsys)
    assert lines == [f"engine: {choice['reason']}"], lines  # one line, the reason summary.json keeps
    assert choice["asked"] == "auto" and choice["reason"].startswith(f"{choice['engine']}, the fastest")
    assert {"onnx", "torch"} <= set(choice["agreement"]) <= {"onnx", "torch", "onnx-int8"}
    assert choice["agreement"]["onnx"] == 1.0  # the float32 reference
    assert choice["agreement"][choice["engine"]] >= AGREEMENT_NEEDED, choice["reason"]
    assert set(choice["patches_per_second"]) == set(choice["agreement"]) and choice["sampled_patches"] > 50
    # Rounds stop when another would end past the limit; a load spike in the last one may overrun it a little.
    assert 0 < choice["seconds"] <= 4.0 + 2.0, choice["reason"]  # a last round may overrun; 2 s of slack for a loaded machine


def test_auto_leaves_int8_out_when_calibrating_would_overrun(detector, synthetic_slide, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setattr(engine_choice, "CHOICE_SECONDS", 0.5)
    monkeypatch.setattr(engine_choice, "CALIBRATION_SET_UP", 60.0)
    _, choice = predict_auto(detector, synthetic_slide, tmp_path, capsys)
    assert "onnx-int8" not in choice["agreement"] and choice["engine"] != "onnx-int8"
    # 60 s of set-up plus its passes over the patches, at the speed this machine had then
    assert re.fullmatch(r"calibrating it would take about 6\d s per slide, past the 0.5 s to choose", choice["left_out"]["onnx-int8"])
    assert "onnx-int8 not measured: calibrating" in choice["reason"]
    assert not (tmp_path / ".int8-cache").exists()  # nothing calibrated


def test_int8_is_never_chosen_when_slower():
    onnx, pytorch = Trial("onnx", 274, 1.0), Trial("torch", 230, 1.0)
    # Slower outright, as on an Intel CPU that ran INT8 at 53 patches/s and float32 at 274.
    assert pick([onnx, pytorch, Trial("onnx-int8", 53, 1.0)], 100_000).engine == "onnx"
    # As fast: not taken over float32.
    assert pick([onnx, pytorch, Trial("onnx-int8", 274, 1.0)], 100_000).engine == "onnx"
    # Faster per patch, slower over the slide once its calibration is counted.
    assert pick([onnx, pytorch, Trial("onnx-int8", 500, 1.0, per_slide_seconds=20)], 2_000).engine == "onnx"
    # Faster, but making too few of float32's calls.
    assert pick([onnx, pytorch, Trial("onnx-int8", 500, 0.971)], 100_000).engine == "onnx"
    # Faster over the slide, calibration included, and agreeing: taken.
    assert pick([onnx, pytorch, Trial("onnx-int8", 500, 0.998, per_slide_seconds=20)], 100_000).engine == "onnx-int8"
    # PyTorch when it is the faster float engine.
    assert pick([onnx, Trial("torch", 300, 1.0)], 100_000).engine == "torch"


class Called:
    """A stand-in engine that logs its calls: TIL-positive for patches brighter than 100, or,
    `contrary`, the opposite for every patch of an even value / 20."""

    concurrent_batches = 1

    def __init__(self, name: str, log: list[str], contrary: bool = False) -> None:
        self.name, self.log, self.contrary = name, log, contrary

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        self.log.append(self.name)
        value = patches[:, 0, 0, 0].long()
        til = value > 100
        if self.contrary:
            til ^= (value // 20) % 2 == 0
        positive = til.float() * 0.8 + 0.1
        return torch.stack([1 - positive, positive], dim=1)


def one_batch_at_a_time(batches, net):
    for patches, tag in batches:
        yield tag, net(patches).numpy()


def test_rounds_alternate_the_engines_and_compare_their_calls():
    patches = torch.from_numpy(np.repeat(np.arange(10, dtype=np.uint8) * 20, 3 * 4 * 4).reshape(10, 3, 4, 4))
    log: list[str] = []
    rounds = Rounds(patches, one_batch_at_a_time, 4, ("til-negative", "til-positive"))
    rounds.add("reference", Called("reference", log))
    rounds.add("other", Called("other", log, contrary=True))
    assert log == ["reference", "other"]  # a first batch each, untimed
    for _ in range(3):
        rounds.run()
    assert log[2:] == ["reference", "other", "other", "reference", "reference", "other"]  # the order turns round by round
    assert all(len(rates) == 3 for rates in rounds.rates.values())
    other = rounds.trial("other", "reference")
    assert other.agreement == 0.5 and other.patches_per_second > 0  # every patch seen, half of them called otherwise
    assert rounds.trial("reference", "reference").agreement == 1.0
