import pytest
import torch

from nar_search.models.inherit import inherit_weights
from nar_search.models.reduce import nar_reduce
from nar_search.models.registry import original_spec


def _kept_slice(source: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return source[tuple(slice(0, n) for n in shape)]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "side"), [("resnetv2_50", 64), ("resnet18", 64)])
def test_inherited_weights_are_the_sources_kept_slices(name, side):
    original = original_spec(name, side)
    source = original.build()
    spec = nar_reduce(original, 1)
    target = spec.build()
    inherit_weights(target, spec, source)
    source_state, target_state = source.state_dict(), target.state_dict()
    # Same names where blocks are kept: every tensor is the leading slice of the source's.
    for name_, tensor in target_state.items():
        assert torch.equal(tensor, _kept_slice(source_state[name_], tensor.shape)), name_
    assert target(torch.randn(1, 3, spec.input_size, spec.input_size)).shape == (1, 2)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_inception_inherits_through_concatenations(name):
    original = original_spec(name, 87)
    source = original.build().eval()
    spec = nar_reduce(original, 1)  # 87 px → 76 px
    target = spec.build().eval()
    inherit_weights(target, spec, source)
    # The first conv keeps its leading output channels; a later block's conv inherits too.
    first_source = next(m for m in source.modules() if isinstance(m, torch.nn.Conv2d))
    first_target = next(m for m in target.modules() if isinstance(m, torch.nn.Conv2d))
    assert torch.equal(first_target.weight, _kept_slice(first_source.weight, first_target.weight.shape))
    assert target(torch.randn(1, 3, spec.input_size, spec.input_size)).shape == (1, 2)


def test_the_least_important_channels_are_those_of_smallest_weights_over_the_coupled_layers():
    from nar_search.models.channels import dependency_graph, least_important

    for scale, expected in ((lambda i: i + 1.0, [0, 1, 2]), (lambda i: 8.0 - i, [5, 6, 7])):
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
        )
        with torch.no_grad():
            for i in range(8):
                net[0].weight[i] = scale(i)
            net[2].weight.fill_(1.0)
        graph = dependency_graph(net, 16)
        assert least_important(graph, net[0], 3) == expected


@pytest.mark.parametrize("by_magnitude", [False, True])
def test_inheriting_at_phi_zero_gives_the_base_exactly(by_magnitude):
    original = original_spec("resnet18", 32)
    source = original.build().eval()
    target = original.build().eval()
    inherit_weights(target, original, source, by_magnitude)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(target(x), source(x))


def test_inheriting_by_magnitude_keeps_other_channels_than_the_first():
    original = original_spec("resnet18", 48)
    source = original.build().eval()
    spec = nar_reduce(original, 1)
    first, heaviest = spec.build().eval(), spec.build().eval()
    inherit_weights(first, spec, source)
    inherit_weights(heaviest, spec, source, by_magnitude=True)
    x = torch.randn(2, 3, spec.input_size, spec.input_size)
    assert heaviest(x).shape == (2, 2)
    assert not torch.equal(first.state_dict()["conv1.weight"], heaviest.state_dict()["conv1.weight"])
    # every kept filter is one of the source's, whole
    kept = heaviest.state_dict()["conv1.weight"]
    assert all(any(torch.equal(row, source_row) for source_row in source.state_dict()["conv1.weight"]) for row in kept)
