"""Starting a reduced network from a trained full one: keep the first blocks of each stage
and, of each group of coupled channels (residuals, concatenations), the first ones or the
ones whose weights weigh most, every coupled layer following, so inherited weights stay
aligned where a plain slice by name would not."""

from __future__ import annotations

import copy
from typing import cast

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


def inherit_weights(target: nn.Module, spec: ArchSpec, source: nn.Module, by_magnitude: bool = False) -> None:
    """Loads into `target` (built from the reduced `spec`) the kept blocks and channels of
    `source`, the original network (ϕ = 0) with trained weights: the first channels, or with
    `by_magnitude` those of the largest L1 norm over their coupled layers."""
    donor = copy.deepcopy(source).cpu()
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
    remove_out_channels(graph, plan)
    target_shapes = {k: v.shape for k, v in target.state_dict().items()}
    donor_state = donor.state_dict()
    if {k: v.shape for k, v in donor_state.items()} != target_shapes:
        raise ModelError(f"cannot inherit weights: the full {spec.model_name} does not shrink to the reduced shapes")
    target.load_state_dict(donor_state)


def _width(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else cast(nn.Linear, module).out_features
