"""What a network costs: GFLOPs per patch as the paper counts them, parameters, latency.

FLOPs are 2 × the multiply-accumulates of every convolution and dense layer (the paper's
Fconv and Fdense), counted by PyTorch's FlopCounterMode on the `meta` device: shapes
only, no memory, no arithmetic, so even full-size networks cost milliseconds to count.
"""

from __future__ import annotations

import functools
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nar_search.models.spec import ArchSpec

# Ops that are convolutions or dense layers; anything else (norms, pools, adds) is free.
_COUNTED_OPS = {"convolution", "addmm", "mm", "bmm", "linear"}


@dataclass(frozen=True)
class ModelCost:
    gflops: float
    params: int


@dataclass(frozen=True)
class Latency:
    batch_size: int
    threads: int
    device: str
    median_ms: float  # per batch
    throughput: float  # patches per second

    @property
    def ms_per_patch(self) -> float:
        return self.median_ms / self.batch_size


def count_gflops(model: nn.Module, input_size: int, in_chans: int = 3) -> float:
    """GFLOPs of one forward pass on one patch of side `input_size`."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.empty(1, in_chans, input_size, input_size, device=device))
    model.train(was_training)
    counts: dict[Any, int] = counter.get_flop_counts()["Global"]
    return sum(n for op, n in counts.items() if op.__name__.split(".")[0] in _COUNTED_OPS) / 1e9


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@functools.lru_cache(maxsize=512)
def spec_cost(spec: ArchSpec) -> ModelCost:
    """Cached: specs are frozen, and a study asks about the same network several times."""
    with torch.device("meta"):
        model = spec.build()
    return ModelCost(gflops=count_gflops(model, spec.input_size), params=count_params(model))


def measure_latency(
    model: nn.Module,
    input_size: int,
    batch_size: int = 16,
    device: str = "cpu",
    threads: int | None = None,
    warmup: int = 3,
    repeats: int = 10,
) -> Latency:
    """Median wall time of a forward pass over `repeats` runs after `warmup` runs."""
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model = model.to(device).eval()
        batch = torch.randn(batch_size, 3, input_size, input_size, device=device)
        times = []
        with torch.inference_mode():
            for run in range(warmup + repeats):
                start = time.perf_counter()
                model(batch)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                if run >= warmup:
                    times.append(time.perf_counter() - start)
        median = statistics.median(times)
        return Latency(batch_size, torch.get_num_threads(), device, median * 1e3, batch_size / median)
    finally:
        torch.set_num_threads(previous_threads)
