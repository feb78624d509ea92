import itertools

import pytest
import timm
import torch
from torch import nn

from nar_search.models.cost import count_gflops, spec_cost
from nar_search.models.inception_resnet_v2 import InceptionResNetV2Spec
from nar_search.models.inception_v4 import InceptionV4Spec
from nar_search.models.reduce import nar_reduce
from nar_search.models.spec import ArchSpec, spec_from_json

SPEC_TYPES = {"inception_v4": InceptionV4Spec, "inception_resnet_v2": InceptionResNetV2Spec}
MODEL_NAMES = list(SPEC_TYPES)


def original(model_name: str) -> ArchSpec:
    return SPEC_TYPES[model_name](model_name=model_name, input_size=299)


def reduced(model_name: str, phi: int, rounding: str = "paper") -> ArchSpec:
    return nar_reduce(original(model_name), phi, rounding=rounding)


def shapes_only(spec: ArchSpec) -> nn.Module:
    with torch.device("meta"):
        return spec.build()


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def leaf_modules(model: nn.Module) -> dict[str, str]:
    return {name: repr(m) for name, m in model.named_modules() if not list(m.children())}


def image(side: int, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(side))


def calibrate_batchnorm(model: nn.Module, side: int) -> None:
    """At timm's fresh init (unit running variance) Inception V4's activations vanish to ~1e-10
    by the head, so any body gives the classifier's bias. Running statistics taken from one
    batch keep the signal alive, and they travel with the state dict."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0
    with torch.no_grad():
        model.train()(image(side, batch=2))
    model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_original_size_is_exactly_timms_network(model_name):
    side = SPEC_TYPES[model_name].min_input_size
    model = original(model_name).build().eval()
    reference = timm.create_model(model_name, num_classes=2)
    calibrate_batchnorm(reference, side)

    assert parameter_count(model) == parameter_count(reference)
    assert leaf_modules(model) == leaf_modules(reference)
    model.load_state_dict(reference.state_dict(), strict=True)
    x = image(side)
    with torch.no_grad():
        features = reference.forward_features(x)
        assert features.std() > 0.1
        assert torch.equal(model.forward_features(x), features)
        assert torch.equal(model(x), reference(x))


@pytest.mark.slow
@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_original_size_costs_timms_flops_and_runs_at_full_size(model_name):
    spec = original(model_name)
    with torch.device("meta"):
        reference = timm.create_model(model_name, num_classes=2)
    assert spec_cost(spec).gflops == pytest.approx(count_gflops(reference, 299), rel=1e-9)
    with torch.no_grad():
        assert spec.build().eval()(image(299)).shape == (1, 2)


@pytest.mark.slow
@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_nar_reductions_build_run_and_shrink(model_name):
    counts, flops = [], []
    for phi in range(6):
        spec = reduced(model_name, phi)
        counts.append(parameter_count(shapes_only(spec)))
        flops.append(spec_cost(spec).gflops)
        if phi > 0:
            with torch.no_grad():
                assert spec.build().eval()(image(96)).shape == (1, 2)
    assert all(bigger > smaller for bigger, smaller in itertools.pairwise(counts)), counts
    assert all(bigger > smaller for bigger, smaller in itertools.pairwise(flops)), flops


def test_inception_v4_repeats_and_widths_follow_the_paper_rounding():
    spec = reduced("inception_v4", 1)
    assert spec.repeats == (3, 6, 2)  # round(4/1.2) = 3, round(7/1.2) = 6, round(3/1.2 = 2.5) = 2
    assert spec.width(96) == 87


@pytest.mark.parametrize(
    ("phi", "repeats"),
    [(0, (10, 20, 10)), (1, (8, 17, 8)), (2, (7, 14, 7)), (3, (5, 11, 6)), (4, (4, 9, 5)), (5, (3, 7, 4))],
)
def test_inception_resnet_v2_repeats_follow_the_authors_table(phi, repeats):
    assert reduced("inception_resnet_v2", phi).repeats == repeats


def test_inception_resnet_v2_divisible8_rounds_the_same_quantities_up():
    # ceil(11/1.2) - 1, ceil(21/1.2) - 1, ceil(10/1.2)
    assert reduced("inception_resnet_v2", 1, rounding="divisible8").repeats == (9, 17, 9)


def test_inception_resnet_v2_residual_blocks_keep_their_width():
    model = shapes_only(reduced("inception_resnet_v2", 3))
    for block in [*model.repeat, *model.repeat_1, *model.repeat_2, model.block8]:
        assert block.conv2d.out_channels == block.branch0.in_channels


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_spec_survives_a_json_round_trip(model_name):
    spec = reduced(model_name, 2)
    loaded = spec_from_json(spec.to_json())
    assert loaded == spec
    shapes = {name: p.shape for name, p in shapes_only(spec).named_parameters()}
    assert {name: p.shape for name, p in shapes_only(loaded).named_parameters()} == shapes


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_min_input_size_is_the_smallest_side_that_runs(model_name):
    model = reduced(model_name, 5).build().eval()
    side = SPEC_TYPES[model_name].min_input_size
    with torch.no_grad():
        assert model(image(side)).shape == (1, 2)
        with pytest.raises(RuntimeError):
            model(image(side - 1))


@pytest.mark.parametrize(
    ("model_name", "rows"),
    [
        (
            "inception_v4",
            [
                ("stem", 1, "32, 32, 64"),
                ("Mixed-3a", 1, "160"),
                ("Mixed-4a", 1, "192"),
                ("Mixed-5a", 1, "384"),
                ("Inception-A", 4, "384"),
                ("Reduction-A", 1, "1024"),
                ("Inception-B", 7, "1024"),
                ("Reduction-B", 1, "1536"),
                ("Inception-C", 3, "1536"),
            ],
        ),
        (
            "inception_resnet_v2",
            [
                ("stem", 1, "32, 32, 64, 80, 192"),
                ("Mixed-5b", 1, "320"),
                ("Inception-ResNet-A", 10, "320"),
                ("Reduction-A (Mixed-6a)", 1, "1088"),
                ("Inception-ResNet-B", 20, "1088"),
                ("Reduction-B (Mixed-7a)", 1, "2080"),
                ("Inception-ResNet-C", 10, "2080"),
                ("conv-7b", 1, "1536"),
            ],
        ),
    ],
)
def test_stage_table_of_the_original(model_name, rows):
    assert [(s.name, s.blocks, s.widths) for s in original(model_name).stages()] == rows
