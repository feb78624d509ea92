"""Removing output channels from any PyTorch CNN, with every coupled channel (residual
sums, concatenations, depthwise convs, norms) following, via Torch-Pruning's DependencyGraph."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

if TYPE_CHECKING:  # imported where a graph is built: see models.spec.spec_types
    import torch_pruning as tp


def dependency_graph(model: nn.Module, input_size: int) -> tp.DependencyGraph:
    import torch_pruning as tp

    example = torch.zeros(1, 3, input_size, input_size, device=next(model.parameters()).device)
    was_training = model.training
    with torch.enable_grad():  # the graph is traced through autograd, even when a caller runs without it
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    model.train(was_training)  # tracing leaves the model in eval mode
    return graph


def prunable_roots(graph: tp.DependencyGraph, keep: Iterable[nn.Module]) -> list[nn.Module]:
    """One root conv/linear per group of coupled output channels, groups touching `keep` excluded."""
    return [group[0].dep.target.module for group in graph.get_all_groups(ignored_layers=list(keep))]


def out_channels(graph: tp.DependencyGraph, module: nn.Module) -> int:
    return cast(int, graph.get_out_channels(module))


def get_classifier(model: nn.Module) -> nn.Module:
    # timm's models and this package's own networks have get_classifier; nn.Module does not declare it.
    return cast(Callable[[], nn.Module], model.get_classifier)()


def least_important(graph: tp.DependencyGraph, module: nn.Module, count: int) -> list[int]:
    """The `count` output channels of `module` whose weights, summed over every coupled layer
    (L1, Torch-Pruning's group magnitude), are smallest."""
    import torch_pruning as tp

    pruner = graph.get_pruner_of_module(module)
    group = graph.get_pruning_group(module, pruner.prune_out_channels, list(range(out_channels(graph, module))))
    scores = tp.importance.GroupMagnitudeImportance(p=1)(group)
    return sorted(int(i) for i in torch.argsort(scores)[:count])


def remove_out_channels(graph: tp.DependencyGraph, plan: dict[nn.Module, list[int]]) -> None:
    """Removes the listed output channels of each root module (and everything coupled to them)."""
    for module, indices in plan.items():
        if indices:
            pruner = graph.get_pruner_of_module(module)
            graph.get_pruning_group(module, pruner.prune_out_channels, indices).prune()


def shrink_widths(model: nn.Module, input_size: int, width: Callable[[int], int], keep: Iterable[nn.Module]) -> None:
    """Makes every prunable group of channels `width(n)` wide, dropping its last channels."""
    graph = dependency_graph(model, input_size)
    roots = prunable_roots(graph, keep)
    plan = {}
    for root in roots:
        n = out_channels(graph, root)
        plan[root] = list(range(min(n, width(n)), n))
    remove_out_channels(graph, plan)
