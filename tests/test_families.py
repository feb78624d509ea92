import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from nar_search import models
from nar_search.models.cost import spec_cost
from nar_search.models.errors import ModelError
from nar_search.models.reduce import NARCoefficients, nar_reduce
from nar_search.models.resnetv2 import ResNetV2Spec
from nar_search.models.spec import FAMILY_MODULES, exact_families, spec_from_json
from nar_search.models.timm_generic import TimmCNNSpec


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def test_resnetv2_original_is_timms_resnetv2_50():
    spec = ResNetV2Spec(model_name="resnetv2_50", input_size=224)
    model, reference = spec.build(), timm.create_model("resnetv2_50", num_classes=2)
    assert shapes(model) == shapes(reference)
    model.load_state_dict(reference.state_dict())


def test_resnetv2_full_size_forward():
    model = ResNetV2Spec(model_name="resnetv2_50", input_size=240).build().eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 240, 240)).shape == (1, 2)


@pytest.mark.parametrize("phi", [1, 3, 5])
def test_reduced_resnetv2_has_the_specs_exact_widths(phi):
    spec = nar_reduce(ResNetV2Spec(model_name="resnetv2_50", input_size=64), phi)
    model = spec.build()
    assert model.stem.conv.out_channels == spec.stem_width
    for stage, depth, mid in zip(model.stages, spec.depths, spec.mid_widths):
        assert len(stage.blocks) == depth
        assert stage.blocks[0].conv1.out_channels == mid and stage.blocks[0].conv3.out_channels == 4 * mid
    assert model(torch.randn(2, 3, spec.input_size, spec.input_size)).shape == (2, 2)


@pytest.mark.parametrize(
    "spec",
    [
        nar_reduce(ResNetV2Spec(model_name="resnetv2_50", input_size=64), 2),
        nar_reduce(TimmCNNSpec.original("resnet18", 64), 1),
    ],
    ids=["resnetv2", "timm-generic"],
)
def test_spec_json_round_trip_rebuilds_identical_shapes(spec):
    again = spec_from_json(spec.to_json())
    assert again == spec
    assert shapes(again.build()) == shapes(spec.build())


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "convnext_atto"])
def test_generic_timm_cnns_lose_depth_and_width(name):
    original = TimmCNNSpec.original(name, 64)
    reduced = nar_reduce(original, 2)
    full, small = original.build(), reduced.build()
    assert sum(reduced.depths) < sum(original.depths)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in full.parameters())
    assert small(torch.randn(2, 3, reduced.input_size, reduced.input_size)).shape == (2, 2)
    assert all(module.training for module in small.modules())  # built ready to train


def test_generic_width_is_the_rounded_fraction_of_each_conv():
    reduced = nar_reduce(TimmCNNSpec.original("resnet18", 64), 1)
    model = reduced.build()
    assert model.conv1.out_channels == round(64 / 1.1)
    assert model.get_classifier().out_features == 2


def test_grouped_convolutions_are_refused_clearly():
    with pytest.raises(ModelError, match="grouped convolutions"):
        nar_reduce(TimmCNNSpec.original("regnetx_002", 64), 1).build()


def test_grouped_convolutions_reduce_in_depth_and_resolution_at_beta_1():
    """What the refusal advises: --beta 1.0 keeps every width, so the groups stay whole."""
    original = TimmCNNSpec.original("regnetx_002", 64)
    reduced = nar_reduce(original, 1, NARCoefficients(alpha=1.4, beta=1.0, gamma=1.2))
    model = reduced.build()
    assert sum(reduced.depths) < sum(original.depths) and reduced.input_size < 64
    assert model(torch.randn(2, 3, reduced.input_size, reduced.input_size)).shape == (2, 2)
    assert spec_cost(reduced).gflops < spec_cost(original).gflops


def test_a_model_without_stages_is_refused_clearly():
    with pytest.raises(ModelError, match="no stages"):
        TimmCNNSpec.original("vit_tiny_patch16_224", 224)


def test_unknown_spec_family_is_refused():
    with pytest.raises(ModelError, match="unknown architecture family"):
        spec_from_json('{"family": "nope"}')


def test_every_family_module_is_in_the_list_that_spec_types_imports():
    """The families load when a spec is read, not with the package (they bring torch, and the
    CLI's --help starts without it): so their modules are listed, and the list kept whole here."""
    registering = {path.stem for path in Path(models.__file__).parent.glob("*.py") if "@register_spec" in path.read_text()}
    assert registering == set(FAMILY_MODULES)
    assert set(exact_families()) == {"resnetv2_50", "inception_v4", "inception_resnet_v2"}


@pytest.mark.slow
def test_a_classifier_of_any_family_builds_after_importing_the_classifier_module_only():
    """As in a notebook that loads a checkpoint: no other module of ours imported first."""
    code = (
        "from nar_search.lightning_modules.classifier import PatchClassifier\n"
        "spec = {'family': 'inception_v4', 'model_name': 'inception_v4', 'input_size': 75}\n"
        "print(type(PatchClassifier(spec).model).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "InceptionV4"
