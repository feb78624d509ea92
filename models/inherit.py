"""Starting a reduced network from a trained full one: keep the first blocks of each stage
and, of each group of coupled channels (residuals, concatenations), the first ones or the
ones whose weights weigh most, every coupled layer following, so inherited weights stay
aligned where a plain slice by name would not.

What is kept is found once per architecture as index lists, one per dimension of each tensor
(`Selection`): inheriting is then a gather, cheap enough to do at every training step of an
elastic network (models/elastic.py), and differentiable."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import cast

import torch
from torch import nn

from nar_search.models.channels import (
    dependency_graph,
    get_classifier,
    least_important,
    out_channels,
    prunable_roots,
    remove_out_channels,
)
from nar_search.models.errors import ModelError
from nar_search.models.spec import ArchSpec

# For each tensor of a reduced network (by state-dict name): the name of its source's tensor it
# comes from, and the indices it keeps along each dimension (None where it keeps them all).
Selection = dict[str, tuple[str, tuple[torch.Tensor | None, ...]]]


def inherit_weights(target: nn.Module, spec: ArchSpec, source: nn.Module, by_magnitude: bool = False) -> None:
    """Loads into `target` (built from the reduced `spec`) the kept blocks and channels of
    `source`, the original network (ϕ = 0) with trained weights: the first channels, or with
    `by_magnitude` those of the largest L1 norm over their coupled layers."""
    selection = kept_elements(spec, source, by_magnitude, target)
    with torch.no_grad():
        target.load_state_dict(gather({name: tensor.cpu() for name, tensor in source.state_dict().items()}, selection))


def gather(state: Mapping[str, torch.Tensor], selection: Selection) -> dict[str, torch.Tensor]:
    """The tensors of a reduced network, taken from its source's `state` as `selection` says
    (gradients flow back to the source's tensors)."""
    gathered = {}
    for name, (origin, dims) in selection.items():
        tensor = state[origin]
        for dim, indices in enumerate(dims):
            if indices is not None:
                tensor = tensor.index_select(dim, indices)
        gathered[name] = tensor
    return gathered


def kept_elements(spec: ArchSpec, source: nn.Module, by_magnitude: bool = False, target: nn.Module | None = None) -> Selection:
    """Which blocks and channels of `source` (the original network) the network of the reduced
    `spec` keeps. Found by shrinking a copy of `source` whose every value is its own position:
    what is left says where each kept element came from (`target`: `spec` built, if at hand)."""
    target = target or spec.build()
    donor = copy.deepcopy(source).cpu()
    origins = {module: name for name, module in donor.named_modules()}  # truncating may rename blocks
    spec.truncate(donor)
    graph = dependency_graph(donor, spec.min_input_size)
    names = {module: name for name, module in donor.named_modules()}
    wanted = dict(target.named_modules())
    plan = {}
    for root in prunable_roots(graph, keep=[get_classifier(donor)]):
        name = names[root]
        if name not in wanted:
            raise ModelError(f"cannot inherit weights: the reduced {spec.model_name} has no layer {name!r}")
        width, n = _width(wanted[name]), out_channels(graph, root)
        plan[root] = least_important(graph, root, n - width) if by_magnitude and width < n else list(range(width, n))
    shapes = {name: tensor.shape for name, tensor in donor.state_dict().items()}
    donor.double()  # positions as values, exact in float64 for any tensor a CNN has
    with torch.no_grad():
        for tensor in donor.state_dict().values():
            tensor.copy_(torch.arange(tensor.numel()).view(tensor.shape))
    remove_out_channels(graph, plan)
    target_shapes = {k: v.shape for k, v in target.state_dict().items()}
    positions = donor.state_dict()
    if {k: v.shape for k, v in positions.items()} != target_shapes:
        raise ModelError(f"cannot inherit weights: the full {spec.model_name} does not shrink to the reduced shapes")
    selection = {}
    for name, position in positions.items():
        module, _, leaf = name.rpartition(".")
        origin = ".".join(filter(None, (origins[donor.get_submodule(module)], leaf)))
        selection[name] = (origin, _per_dimension(position.round().long(), shapes[name]))
    return selection


def _per_dimension(position: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor | None, ...]:
    """Flat positions in a tensor of `shape`, as kept indices along each dimension (channels are
    removed whole, so each dimension keeps its own list)."""
    coordinates = torch.unravel_index(position, shape) if position.dim() else ()
    dims: list[torch.Tensor | None] = []
    for dim, coordinate in enumerate(coordinates):
        along = coordinate[(0,) * dim + (slice(None),) + (0,) * (position.dim() - dim - 1)].clone()  # not a view that keeps the whole map
        dims.append(None if torch.equal(along, torch.arange(shape[dim])) else along)
    selection = tuple(dims)
    if not torch.equal(gather({"": torch.arange(math.prod(shape)).view(shape)}, {"": ("", selection)})[""], position):
        raise ModelError("cannot inherit weights: a layer keeps channels that are not whole rows and columns of the original's")
    return selection


def _width(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else cast(nn.Linear, module).out_features
