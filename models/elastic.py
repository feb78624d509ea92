"""One elastic network: the base network whose weights every reduced network of it shares.

A reduced network (any spec a reducer makes of the base: fewer blocks, fewer channels, a
smaller input) runs on a gather of the base's tensors, the blocks and channels that weight
inheritance keeps (models/inherit.py), so training it trains the shared weights, and taking
it out is inheriting from them (Once-for-All's and BigNAS's weight sharing, over NAR's α, β,
γ). Which elements each architecture keeps is found once and kept by the architecture."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.func import functional_call

from nar_search.models.inherit import Selection, gather, kept_elements
from nar_search.models.spec import ArchSpec


class ElasticNetwork(nn.Module):
    """The base network (`base`, built from `base_spec`), and any reduced spec of it run on its
    shared weights. The first channels of each group are kept: they stay the same channels
    however the shared weights change while training."""

    def __init__(self, base_spec: ArchSpec, base: nn.Module) -> None:
        super().__init__()
        self.base_spec, self.base = base_spec, base
        self._selections: dict[ArchSpec, Selection] = {}
        self._skeletons: dict[ArchSpec, nn.Module] = {}

    def forward(self, inputs: torch.Tensor, spec: ArchSpec | None = None) -> torch.Tensor:
        """The outputs of `spec`'s network (the base's without one) for inputs at its side."""
        if spec is None or spec == self.base_spec:
            return cast(torch.Tensor, self.base(inputs))
        skeleton = self._skeleton(spec)
        skeleton.train(self.training)
        return cast(torch.Tensor, functional_call(skeleton, self.shared_state(spec), (inputs,)))

    def shared_state(self, spec: ArchSpec) -> dict[str, torch.Tensor]:
        """`spec`'s tensors, gathered from the shared ones: its weights pass gradients back to
        them; its norms' running statistics are its own copies, which its batches never write
        into the base's (a slice's statistics are measured again before it is judged)."""
        buffers = dict(self.base.named_buffers())
        state = gather(dict(self.base.named_parameters()) | buffers, self.selection(spec))
        # A gathered buffer is a new tensor already; only those kept whole are the base's own.
        whole = {id(buffer) for buffer in buffers.values()}
        return {name: tensor.clone() if id(tensor) in whole else tensor for name, tensor in state.items()}

    def selection(self, spec: ArchSpec) -> Selection:
        if spec not in self._selections:
            device = next(self.base.parameters()).device  # the indices where the gathers run, moved once
            selection = kept_elements(spec, self.base, target=self._skeleton(spec))
            self._selections[spec] = {
                name: (origin, tuple(None if indices is None else indices.to(device) for indices in dims))
                for name, (origin, dims) in selection.items()
            }
        return self._selections[spec]

    def extract(self, spec: ArchSpec) -> nn.Module:
        """`spec`'s network on its own: a copy of its shared weights, for training on or export."""
        network = spec.build()
        with torch.no_grad():
            network.load_state_dict({name: tensor.detach().clone() for name, tensor in self.shared_state(spec).items()})
        return network.train(self.training).to(next(self.base.parameters()).device)

    def _skeleton(self, spec: ArchSpec) -> nn.Module:
        """`spec`'s modules, whose own weights are never used: `forward` passes the shared ones."""
        if spec not in self._skeletons:
            self._skeletons[spec] = spec.build().to("meta")
        return self._skeletons[spec]
