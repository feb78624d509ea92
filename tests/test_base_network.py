"""The base network a study reduces: an export or training folder, or a plain timm state dict,
checked against the original spec with one clear line when it does not fit."""

import pytest
import timm
import torch
from safetensors.torch import save_file

from nar_search.models.base_network import load_base
from nar_search.models.errors import ModelError
from nar_search.models.init_modes import INIT_MODES, get_init_mode
from nar_search.models.reduce import nar_reduce
from nar_search.models.registry import original_spec
from nar_search.models.weights import save_network


def timm_state(name: str) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in timm.create_model(name, num_classes=2).state_dict().items()}


@pytest.mark.slow
def test_a_plain_timm_state_dict_as_safetensors_and_as_pt(tmp_path):
    state = timm_state("resnet18")
    save_file(state, tmp_path / "base.safetensors")
    torch.save(state, tmp_path / "base.pt")
    for path in (tmp_path / "base.safetensors", tmp_path / "base.pt"):
        base = load_base(path, "resnet18", 40)
        assert base.spec == original_spec("resnet18", 40)
        assert torch.equal(base.build().state_dict()["fc.weight"], state["fc.weight"])


def test_a_lightning_checkpoint_gives_its_network(tmp_path):
    state = timm_state("resnet18")
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "best.ckpt.pt")
    base = load_base(tmp_path / "best.ckpt.pt", "resnet18", 40)
    assert torch.equal(base.state["conv1.weight"], state["conv1.weight"])


def test_a_folder_with_spec_and_weights_sets_the_input_side(tmp_path):
    spec = original_spec("resnet18", 44)
    save_network(spec.build(), spec, tmp_path / "trained")
    base = load_base(tmp_path / "trained", "resnet18")
    assert base.spec.input_size == 44


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: save_file(timm_state("resnet34"), p / "w.safetensors") or p / "w.safetensors", "do not fit the architecture spec"),
        (lambda p: torch.save(torch.nn.Linear(2, 2), p / "model.pt") or p / "model.pt", "not a plain PyTorch state dict"),
        (lambda p: p / "missing.safetensors", "not found"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "has no spec.json or model.safetensors"),
    ],
)
def test_a_base_that_does_not_fit_is_one_clear_line(tmp_path, make, message):
    with pytest.raises(ModelError, match=message) as error:
        load_base(make(tmp_path), "resnet18", 40)
    assert "\n" not in str(error.value)


def test_a_reduced_or_other_side_folder_is_refused(tmp_path):
    original = original_spec("resnet18", 40)
    reduced = nar_reduce(original, 1)
    save_network(reduced.build(), reduced, tmp_path / "reduced")
    with pytest.raises(ModelError, match="already reduced"):
        load_base(tmp_path / "reduced", "resnet18")
    save_network(original.build(), original, tmp_path / "full")
    with pytest.raises(ModelError, match="set the input size to 40"):
        load_base(tmp_path / "full", "resnet18", 48)
    with pytest.raises(ModelError, match="set the model to resnet18"):
        load_base(tmp_path / "full", "resnet34")


@pytest.mark.slow
def test_init_modes_registry_and_inherit_from_a_base(tmp_path):
    assert set(INIT_MODES) == {"scratch", "inherit", "inherit-magnitude"}
    original = original_spec("resnet18", 40)
    save_network(original.build(), original, tmp_path / "full")
    base = load_base(tmp_path / "full", "resnet18")
    spec = nar_reduce(original, 1)
    model = spec.build()
    get_init_mode("inherit").initialise(model, spec, base)
    assert torch.equal(model.conv1.weight, base.state["conv1.weight"][: model.conv1.out_channels])
    with pytest.raises(ModelError, match="needs a base network"):
        get_init_mode("inherit").initialise(spec.build(), spec, None)
    with pytest.raises(ModelError, match="unknown init mode"):
        get_init_mode("pretrained")


@pytest.mark.slow
def test_an_export_folder_is_a_base(tmp_path):
    from nar_search.models.export import Preprocessing, export_model

    spec = original_spec("resnet18", 40)
    model = spec.build().eval()
    preprocessing = Preprocessing(40, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), ("til-negative", "til-positive"))
    export_model(model, spec, preprocessing, tmp_path / "export")
    base = load_base(tmp_path / "export", "resnet18")
    assert base.spec == spec and torch.equal(base.state["fc.weight"], model.fc.weight)


def test_a_phi_zero_trial_is_the_original_whatever_its_rounding(tmp_path):
    original = original_spec("resnet18", 40)
    trial = nar_reduce(original, 0, rounding="divisible8")  # a study's own baseline records its method and rounding
    save_network(trial.build(), trial, tmp_path / "baseline")
    assert load_base(tmp_path / "baseline", "resnet18").spec == original


def test_an_input_reduced_or_other_class_count_network_is_not_a_base(tmp_path):
    from nar_search.models.reduce import input_reduce

    reduced = input_reduce(original_spec("resnet18", 48), 1)  # same weights, another input side
    save_network(reduced.build(), reduced, tmp_path / "ir")
    with pytest.raises(ModelError, match=r"already reduced \(ir ϕ 1\)"):
        load_base(tmp_path / "ir", "resnet18")
    three = original_spec("resnet18", 40, num_classes=3)
    save_network(three.build(), three, tmp_path / "three")
    with pytest.raises(ModelError, match="has 3 classes, not 2"):
        load_base(tmp_path / "three", "resnet18")


@pytest.mark.slow
def test_a_tampered_export_is_not_a_base(tmp_path):
    from nar_search.models.export import Preprocessing, export_model

    spec = original_spec("resnet18", 40)
    preprocessing = Preprocessing(40, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), ("til-negative", "til-positive"))
    export_model(spec.build().eval(), spec, preprocessing, tmp_path / "export")
    weights = tmp_path / "export" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1000:] = b"\xff" * 1000
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="export the model again"):
        load_base(tmp_path / "export", "resnet18")
