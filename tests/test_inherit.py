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
