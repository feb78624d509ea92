"""ResRep channel pruning (Ding et al., ICCV 2021) on any timm CNN, the comparison method of
the NAR paper: compactors after each prunable conv's norm, gradient resetting with a group
Lasso, a mask schedule towards a FLOPs target, and conversion into a plain thinner network.

Which convs are prunable comes from Torch-Pruning's dependency graph: a conv whose output
channels are coupled to no other layer's output channels (no residual sum, no depthwise conv)
and go straight into a BatchNorm. Its consumers' input channels follow it, across
concatenations too, so Inception's branch convs are prunable like ResNet's bottleneck convs.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import torch
from torch import nn

from nar_search.models.channels import dependency_graph, get_classifier, remove_out_channels
from nar_search.models.spec import ArchSpec, Reduction, Stage, register_spec, spec_from_dict

if TYPE_CHECKING:  # type hints only: see models.spec.spec_types
    import torch_pruning as tp

LASSO_STRENGTH = 1e-4
DEAD_ROW_NORM = 1e-5  # compactor rows below this are dropped by the conversion


class Compactor(nn.Conv2d):
    """ResRep's D → D 1×1 conv between a conv's norm and its activation, starting as the
    identity. Row i makes output channel i; its L2 norm is that channel's importance and
    `mask[i] = 0` leaves the row to the Lasso alone."""

    mask: torch.Tensor

    def __init__(self, channels: int, conv_name: str, norm_name: str) -> None:
        super().__init__(channels, channels, kernel_size=1, bias=False)
        with torch.no_grad():
            self.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
        self.register_buffer("mask", torch.ones(channels))
        self.conv_name, self.norm_name = conv_name, norm_name

    def row_norms(self) -> torch.Tensor:
        return cast(torch.Tensor, self.weight.detach().flatten(1).norm(dim=1))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, after={self.conv_name}"  # type: ignore[no-untyped-call]  # unannotated in torch


def compactors(model: nn.Module) -> list[Compactor]:
    return [module for module in model.modules() if isinstance(module, Compactor)]


def _sole_norm(graph: tp.DependencyGraph, conv: nn.Module) -> nn.BatchNorm2d | None:
    """The BatchNorm with running statistics that alone consumes `conv`'s output, if any."""
    node = graph.module2node[conv]
    for _ in range(2):  # timm's norm-act layers show up as their batch_norm op, then as the module
        if len(node.outputs) != 1:
            return None
        node = node.outputs[0]
        if isinstance(node.module, nn.BatchNorm2d):
            norm = node.module
            return norm if norm.affine and norm.track_running_stats else None
        if "BatchNorm" not in type(node.grad_fn).__name__:
            return None
    return None


def _compactable(graph: tp.DependencyGraph, classifier: nn.Module) -> dict[nn.Conv2d, nn.BatchNorm2d]:
    """Prunable conv → its norm: convs whose channel group couples no other layer's outputs."""
    pairs = {}
    for group in graph.get_all_groups(ignored_layers=[classifier]):
        conv = group[0].dep.target.module
        layers = [dep.target.module for dep, _ in group if isinstance(dep.target.module, (nn.Conv2d, nn.Linear))]
        outputs = {dep.target.module for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)} & set(layers)
        ungrouped = all(getattr(layer, "groups", 1) == 1 for layer in layers)
        norm = _sole_norm(graph, conv) if isinstance(conv, nn.Conv2d) else None
        if outputs == {conv} and ungrouped and norm is not None:
            pairs[conv] = norm
    return pairs


def _attach(model: nn.Module, compactor: Compactor) -> None:
    norm = model.get_submodule(compactor.norm_name)
    act = getattr(norm, "act", None)
    if isinstance(act, nn.Module):
        # timm's BatchNormAct2d applies its activation inside: the compactor goes before it,
        # so that it stays linear after the norm and folds into the conv.
        norm.act = nn.Sequential(compactor, act)
    else:
        model.set_submodule(compactor.norm_name, nn.Sequential(norm, compactor))


def _detach(model: nn.Module, compactor: Compactor) -> nn.BatchNorm2d:
    """Undoes `_attach`: the model's module tree is the base network's again."""
    holder = model.get_submodule(compactor.norm_name)
    if isinstance(holder, nn.Sequential):
        norm = cast(nn.BatchNorm2d, holder[0])
        model.set_submodule(compactor.norm_name, norm)
        return norm
    holder.act = cast(nn.Sequential, holder.act)[1]
    return cast(nn.BatchNorm2d, holder)  # timm's BatchNormAct2d


def compactable_convs(model: nn.Module, input_size: int) -> list[str]:
    """Names of the convs ResRep prunes in `model` (a timm CNN, no compactors yet)."""
    names = {module: name for name, module in model.named_modules()}
    return [names[conv] for conv in _compactable(dependency_graph(model, input_size), get_classifier(model))]


def insert_compactors(model: nn.Module, input_size: int) -> list[Compactor]:
    """Puts an identity compactor after the norm of every prunable conv; outputs are unchanged."""
    names = {module: name for name, module in model.named_modules()}
    inserted = []
    for conv, norm in _compactable(dependency_graph(model, input_size), get_classifier(model)).items():
        compactor = Compactor(conv.out_channels, names[conv], names[norm]).to(conv.weight)
        _attach(model, compactor)
        inserted.append(compactor)
    return inserted


def reset_gradients(model: nn.Module, lasso_strength: float = LASSO_STRENGTH) -> None:
    """ResRep's gradient rule, after `loss.backward()`: grad_i ← mask_i·∂L/∂Q_i + λ·Q_i/‖Q_i‖."""
    for compactor in compactors(model):
        kernel = compactor.weight
        rows = kernel.detach().flatten(1)
        lasso = lasso_strength * rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
        task = kernel.grad if kernel.grad is not None else torch.zeros_like(kernel)
        kernel.grad = task * compactor.mask.view(-1, 1, 1, 1) + lasso.view_as(kernel)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimiser groups that spare the compactors weight decay: only the Lasso shrinks them."""
    kernels = {id(compactor.weight) for compactor in compactors(model)}
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in kernels], "weight_decay": weight_decay},
        {"params": [p for p in model.parameters() if id(p) in kernels], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def _layer_gflops(model: nn.Module, input_size: int) -> dict[nn.Conv2d | nn.Linear, float]:
    """GFLOPs of each conv and dense layer, as `models.cost.count_gflops` counts them."""
    gflops: dict[nn.Conv2d | nn.Linear, float] = defaultdict(float)

    def record(module: nn.Conv2d | nn.Linear, _inputs: Any, output: torch.Tensor) -> None:
        # Per output element: (in / groups)·k² multiply-accumulates for a conv, in for a dense layer.
        gflops[module] += 2 * output.numel() * module.weight[0].numel() / 1e9

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    hooks = [layer.register_forward_hook(record) for layer in layers]
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, input_size, input_size, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return gflops


@dataclass(frozen=True)
class WidthCost:
    """GFLOPs of the converted network from the widths of its compacted convs. Each conv or dense
    layer costs inputs × outputs × a constant; only those touching a compacted conv vary."""

    widths: Mapping[str, int]  # the compacted convs' original widths
    fixed: float  # GFLOPs of the layers that do not vary
    per_pair: tuple[float, ...]  # per varying layer: GFLOPs per input × output channel
    channels: tuple[tuple[int, int], ...]  # per varying layer: original inputs and outputs
    own: Mapping[str, int]  # compacted conv → its varying layer
    consumers: Mapping[str, tuple[tuple[int, int], ...]]  # compacted conv → (varying layer, inputs per channel)

    @classmethod
    def of(cls, model: nn.Module, input_size: int) -> WidthCost:
        """The cost model of `model`, a network with compactors (left untouched)."""
        plain = copy.deepcopy(model).to("meta").eval()
        widths = {compactor.conv_name: compactor.out_channels for compactor in compactors(plain)}
        for compactor in compactors(plain):
            _detach(plain, compactor)
        graph = dependency_graph(plain, input_size)
        index: dict[nn.Module, int] = {}
        per_pair: list[float] = []
        channels: list[tuple[int, int]] = []
        fixed = 0.0
        varying = {plain.get_submodule(name) for name in widths}
        consumers: dict[str, list[tuple[nn.Module, int]]] = {}
        for name in widths:
            conv = plain.get_submodule(name)
            group = graph.get_pruning_group(conv, graph.get_pruner_of_module(conv).prune_out_channels, [0])
            consumers[name] = [
                (dep.target.module, len(rows))
                for dep, rows in group
                if graph.is_in_channel_pruning_fn(dep.handler) and isinstance(dep.target.module, (nn.Conv2d, nn.Linear))
            ]
            varying.update(layer for layer, _ in consumers[name])
        for layer, gflops in _layer_gflops(plain, input_size).items():
            if layer in varying:
                outputs, inputs = layer.weight.shape[:2]
                index[layer] = len(per_pair)
                per_pair.append(gflops / (inputs * outputs))
                channels.append((inputs, outputs))
            else:
                fixed += gflops
        return cls(
            widths=widths,
            fixed=fixed,
            per_pair=tuple(per_pair),
            channels=tuple(channels),
            own={name: index[plain.get_submodule(name)] for name in widths},
            consumers={name: tuple((index[layer], per) for layer, per in layers) for name, layers in consumers.items()},
        )

    @property
    def original(self) -> float:
        return _Narrowing(self).gflops

    def __call__(self, widths: Mapping[str, int]) -> float:
        narrowing = _Narrowing(self)
        for name, width in widths.items():
            narrowing.remove(name, self.widths[name] - width)
        return narrowing.gflops


class _Narrowing:
    """Compacted convs narrowed step by step with the GFLOPs kept up to date: a channel less
    changes only the terms of its own layer and of its consumers, so each step is cheap."""

    def __init__(self, cost: WidthCost) -> None:
        self.cost = cost
        self.widths = dict(cost.widths)
        self.inputs = [inputs for inputs, _ in cost.channels]
        self.outputs = [outputs for _, outputs in cost.channels]
        self.gflops = cost.fixed + sum(a * i * o for a, i, o in zip(cost.per_pair, self.inputs, self.outputs))

    def remove(self, name: str, channels: int = 1) -> None:
        per_pair, own = self.cost.per_pair, self.cost.own[name]
        self.gflops -= per_pair[own] * self.inputs[own] * channels
        self.outputs[own] -= channels
        for layer, per in self.cost.consumers[name]:
            self.gflops -= per_pair[layer] * per * channels * self.outputs[layer]
            self.inputs[layer] -= per * channels
        self.widths[name] -= channels


def masked_widths(model: nn.Module) -> dict[str, int]:
    """Width of each compacted conv once its masked channels are gone."""
    return {compactor.conv_name: int(compactor.mask.sum()) for compactor in compactors(model)}


def update_masks(model: nn.Module, flops_target: float, max_new: int, *, cost: WidthCost) -> float:
    """ResRep's mask schedule: from the original widths, masks channels by ascending compactor-row
    norm until the FLOPs reach `flops_target` × the original or `max_new` more channels than
    before are masked; no layer goes below one channel. Returns the masked FLOPs fraction."""
    layers = compactors(model)
    allowed = sum(c.out_channels - int(c.mask.sum()) for c in layers) + max_new
    norms = torch.cat([c.row_norms().cpu() for c in layers])
    owners = [(c, row) for c in layers for row in range(c.out_channels)]
    narrowing = _Narrowing(cost)
    goal = flops_target * narrowing.gflops
    masked: list[tuple[Compactor, int]] = []
    for index in norms.argsort(stable=True).tolist():
        if len(masked) >= allowed or narrowing.gflops <= goal:
            break
        compactor, row = owners[index]
        if narrowing.widths[compactor.conv_name] > 1:
            narrowing.remove(compactor.conv_name)
            masked.append((compactor, row))
    for compactor in layers:
        compactor.mask.fill_(1)
    for compactor, row in masked:
        compactor.mask[row] = 0
    return narrowing.gflops / cost.original


@torch.no_grad()
def _fold(conv: nn.Conv2d, norm: nn.BatchNorm2d, compactor: Compactor) -> None:
    """Makes conv → norm equal to the old conv → norm → compactor (in eval mode). The norm keeps
    only the folded bias (identity statistics), so the module tree stays the base network's."""
    # _compactable pairs only norms that track running statistics.
    mean, var = cast(torch.Tensor, norm.running_mean), cast(torch.Tensor, norm.running_var)
    scale = norm.weight / torch.sqrt(var + norm.eps)
    shift = norm.bias - mean * scale
    if conv.bias is not None:
        shift += conv.bias * scale
        conv.bias.zero_()
    q = compactor.weight.flatten(1)
    kernel = q @ (scale[:, None] * conv.weight.flatten(1))
    conv.weight.copy_(kernel.view_as(conv.weight))
    norm.bias.copy_(q @ shift)
    norm.weight.fill_(1)
    mean.zero_()
    var.fill_(1 - norm.eps)  # (x − 0) / √(1 − ε + ε) = x


def _dead_rows(compactor: Compactor, drop_masked: bool) -> list[int]:
    norms = compactor.row_norms()
    dead = norms < DEAD_ROW_NORM
    if drop_masked:
        dead |= compactor.mask == 0
    dead[norms.argmax()] = False  # a layer keeps at least its strongest channel
    return dead.nonzero().flatten().tolist()


def convert(model: nn.Module, input_size: int, drop_masked: bool = False) -> tuple[nn.Module, dict[str, int]]:
    """The plain network without compactors that equals `model` in eval mode, with the channels
    of near-zero compactor rows removed; and the kept width of each compacted conv.

    `drop_masked` also removes masked rows that have not decayed yet: a training budget far
    shorter than the reference's 180 epochs ends before they reach zero, and the schedule's
    choice, not the residue of the Lasso, is what the FLOPs target asked for."""
    plain = copy.deepcopy(model)
    dead = {}
    for compactor in compactors(plain):
        conv = cast(nn.Conv2d, plain.get_submodule(compactor.conv_name))
        _fold(conv, _detach(plain, compactor), compactor)
        dead[compactor.conv_name] = _dead_rows(compactor, drop_masked)
    convs = {name: cast(nn.Conv2d, plain.get_submodule(name)) for name in dead}
    remove_out_channels(dependency_graph(plain, input_size), {convs[name]: rows for name, rows in dead.items()})
    return plain, {name: conv.out_channels for name, conv in convs.items()}


@register_spec
@dataclass(frozen=True, kw_only=True)
class ResRepSpec(ArchSpec):
    """A base network whose compacted convs ResRep narrowed to `widths` (name, width). The norms
    after them are identity-like in the converted weights, so their layout is the base's."""

    family: ClassVar[str] = "resrep"

    base: ArchSpec
    widths: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        if isinstance(self.base, dict):  # read from JSON
            object.__setattr__(self, "base", spec_from_dict(self.base))

    @classmethod
    def of(cls, base: ArchSpec, widths: Mapping[str, int], flops_target: float) -> ResRepSpec:
        return cls(
            model_name=base.model_name,
            input_size=base.input_size,
            num_classes=base.num_classes,
            reduction=Reduction(method="resrep", flops_target=flops_target),
            base=base,
            widths=tuple(widths.items()),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "base": self.base.to_dict()}

    def build(self) -> nn.Module:
        model = self.base.build()
        convs = {name: cast(nn.Conv2d, model.get_submodule(name)) for name, _ in self.widths}
        # The converted network removed chosen channels; the same count from the end gives its shapes.
        plan: dict[nn.Module, list[int]] = {convs[name]: list(range(width, convs[name].out_channels)) for name, width in self.widths}
        remove_out_channels(dependency_graph(model, self.input_size), plan)
        return model

    def stages(self) -> list[Stage]:
        groups: dict[str, list[int]] = defaultdict(list)
        for name, width in self.widths:
            groups[".".join(name.split(".")[:2])].append(width)
        return [Stage(group, len(widths), " ".join(map(str, widths))) for group, widths in groups.items()]
