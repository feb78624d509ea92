"""`--engine auto`: the engine a run takes, chosen on its first slide's tissue patches as the
fastest of those whose TIL calls agree with float32's. Speeds differ by CPU more than any rule
could say: INT8 ran 1.9x float32 on one CPU with AVX2 and 0.2x on another."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch

from nar_search.data.tiling import SlideGrid
from nar_search.models.errors import ModelError
from nar_search.prediction.engines import INT8_ENGINE, Engine, EngineSet
from nar_search.prediction.network import til_calls
from nar_search.prediction.reading import slide_calibration_patches

AGREEMENT_NEEDED = 0.995  # share of float32's TIL calls an engine must make to be chosen
CHOICE_SECONDS = 6.0  # the whole choice aims at this, INT8's calibration included
# INT8 calibration on a slide's patches costs about a second of set-up (quantising rewrites the
# model to output every tensor, and loads both models) and this many float32 passes over them:
# on a reduced resnetv2_50 at 76 px, 256 patches, 2 loaded cores, 4 to 6 (6-7 s at 95-225
# patches/s) and 15 (~20 s at ~200/s) before. The higher errs on the side of not starting a
# calibration that overruns the time to choose.
CALIBRATION_SET_UP, CALIBRATION_PASSES = 1.0, 15

# Runs batches through an engine as mapping does (SlidePredictor.scores): several at once.
Scores = Callable[[Iterable[tuple[torch.Tensor, int]], Engine], Iterator[tuple[int, np.ndarray]]]


@dataclass(frozen=True)
class Trial:
    """An engine as measured on the sampled patches."""

    engine: str
    patches_per_second: float  # median of the timed rounds
    agreement: float  # share of the sampled patches it calls as the float32 reference does
    per_slide_seconds: float = 0.0  # paid again on every slide: INT8's calibration on its patches

    def speed_over(self, patches: int) -> float:
        """Patches per second over a slide of `patches`, its per-slide cost included."""
        return patches / (patches / self.patches_per_second + self.per_slide_seconds)


@dataclass(frozen=True)
class EngineChoice:
    """The engine auto took and why (`reason`, one line for the console and summary.json)."""

    engine: str
    reason: str
    trials: tuple[Trial, ...] = ()
    sampled_patches: int = 0
    seconds: float = 0.0  # spent choosing
    left_out: Mapping[str, str] = field(default_factory=dict)  # engines not measured, and why

    def record(self) -> dict[str, object]:
        """What summary.json keeps of the choice."""
        return {
            "asked": "auto",
            "engine": self.engine,
            "reason": self.reason,
            "seconds": round(self.seconds, 2),
            "sampled_patches": self.sampled_patches,
            "agreement": {trial.engine: trial.agreement for trial in self.trials},
            "patches_per_second": {trial.engine: round(trial.patches_per_second, 1) for trial in self.trials},
            "per_slide_seconds": {trial.engine: round(trial.per_slide_seconds, 2) for trial in self.trials if trial.per_slide_seconds},
            "left_out": dict(self.left_out),
        }


def pick(trials: Sequence[Trial], slide_patches: int) -> Trial:
    """The fastest trial over a slide of `slide_patches`, per-slide costs included, of those
    that agree with float32 on AGREEMENT_NEEDED of the calls; the earliest of equals, so that
    INT8 (listed last) is never taken unless it is faster. The reference always qualifies."""
    agreeing = [trial for trial in trials if trial.agreement >= AGREEMENT_NEEDED]
    return max(agreeing, key=lambda trial: trial.speed_over(slide_patches))


def describe(chosen: Trial, trials: Sequence[Trial], left_out: Mapping[str, str], grid: SlideGrid, sampled: int, seconds: float) -> str:
    """The reason for the choice, in one line."""

    def measured(trial: Trial) -> str:
        text = f"{trial.engine} {trial.patches_per_second:.0f}/s"
        if trial.per_slide_seconds:
            text += f", {trial.speed_over(len(grid)):.0f}/s with its {trial.per_slide_seconds:.1f} s calibration over the slide"
        if trial.agreement < AGREEMENT_NEEDED:
            text += f", only {trial.agreement:.1%} of float32's calls"
        return text

    not_measured = "".join(f"; {engine} not measured: {why}" for engine, why in left_out.items())
    return (
        f"{chosen.engine}, the fastest engine making float32's TIL calls on {AGREEMENT_NEEDED:.1%} or more of "
        f"{sampled} patches of {grid.slide.name} ({'; '.join(measured(trial) for trial in trials)}){not_measured}; "
        f"chosen in {seconds:.1f} s (--engine {chosen.engine} skips this)"
    )


class Rounds:
    """Engines timed on the same patches in alternating rounds: each round takes the next
    `chunk` sampled patches through every engine, in an order that rotates round by round, so
    that the drift of a shared machine's speed falls on every engine alike. Each engine's calls
    are kept per sampled patch, to compare with the reference's."""

    def __init__(self, patches: torch.Tensor, scores: Scores, batch_size: int, class_names: Sequence[str]) -> None:
        self.patches, self.scores, self.batch_size, self.class_names = patches, scores, batch_size, class_names
        self.nets: dict[str, Engine] = {}
        self.rates: dict[str, list[float]] = {}
        self.calls: dict[str, np.ndarray] = {}  # per sampled patch: 1 TIL-positive, 0 not, -1 not run
        self.count = 0
        self.longest = 0.0  # seconds of the longest round: what the next may take, on a shared machine

    def add(self, name: str, net: Engine) -> None:
        """Take the engine into the following rounds, once its first batch (which pays for its
        kernels' set-up, not its speed) has run, untimed."""
        self.nets[name], self.rates[name] = net, []
        self.calls[name] = np.full(len(self.patches), -1, np.int8)
        self._run(name, np.arange(min(self.batch_size, len(self.patches))))

    def run(self) -> None:
        """One timed round of every engine taken."""
        chunk = self.batch_size * max(net.concurrent_batches for net in self.nets.values())  # as many as run at once
        indices = (self.count * chunk + np.arange(chunk)) % len(self.patches)
        names = list(self.nets)
        start = time.perf_counter()
        for name in names[self.count % len(names) :] + names[: self.count % len(names)]:
            self.rates[name].append(len(indices) / self._run(name, indices))
        self.longest = max(self.longest, time.perf_counter() - start)
        self.count += 1

    def _run(self, name: str, indices: np.ndarray) -> float:
        batches = torch.split(self.patches[indices], self.batch_size)
        start = time.perf_counter()
        probabilities = np.concatenate([scores for _, scores in self.scores(((batch, 0) for batch in batches), self.nets[name])])
        seconds = time.perf_counter() - start
        self.calls[name][indices] = til_calls(probabilities, self.class_names)
        return seconds

    def trial(self, name: str, reference: str, per_slide_seconds: float = 0.0) -> Trial:
        both = (self.calls[name] >= 0) & (self.calls[reference] >= 0)
        agreement = float(np.mean(self.calls[name][both] == self.calls[reference][both]))
        return Trial(name, statistics.median(self.rates[name]), agreement, per_slide_seconds)


def choose_engine(
    engines: EngineSet, candidates: Sequence[str], grid: SlideGrid, scores: Scores, seconds: float | None = None
) -> EngineChoice:
    """The engine of `candidates` (auto_engines': the float32 reference first) to map slides
    with, measured on `grid`'s slide in about `seconds` (default CHOICE_SECONDS): float engines
    first, then INT8 if its calibration on this slide fits the time left (it is paid again for
    every slide, and counted so). Every engine measured runs at least one timed round, so a slow
    one can overrun the budget by a round."""
    seconds = CHOICE_SECONDS if seconds is None else seconds
    start = time.perf_counter()
    deadline = start + seconds
    sample = slide_calibration_patches(grid, engines.exported.preprocessing.input_size)  # INT8's calibration patches too
    if not len(sample):
        reason = f"{candidates[0]}, the float32 reference: {grid.slide.name} has no tissue patches to measure the engines on"
        return EngineChoice(candidates[0], reason, seconds=time.perf_counter() - start)
    rounds = Rounds(torch.from_numpy(sample), scores, engines.batch_size, engines.exported.preprocessing.class_names)
    left_out: dict[str, str] = {}
    for name in candidates:
        if name != INT8_ENGINE:
            try:
                rounds.add(name, engines.net(name))  # PyTorch's: seconds to build (timm's import), counted
            except ModelError as error:
                left_out[name] = str(error)
    if not rounds.nets:
        raise ModelError(f"no engine could run this model: {'; '.join(f'{name}: {why}' for name, why in left_out.items())}")
    reference = next(iter(rounds.nets))
    rounds.run()
    per_slide: dict[str, float] = {}
    if INT8_ENGINE in candidates:
        made = engines.int8.made_before(sample)
        estimate = CALIBRATION_SET_UP + CALIBRATION_PASSES * len(sample) / statistics.median(rounds.rates[reference])
        if made is None and time.perf_counter() + estimate + rounds.longest > deadline:
            left_out[INT8_ENGINE] = f"calibrating it would take about {estimate:.0f} s per slide, past the {seconds:g} s to choose"
        else:
            calibrating = time.perf_counter()
            int8, _ = engines.int8.for_slide(grid, sample)
            cost = cast(float, made.get("calibration_seconds", estimate)) if made else time.perf_counter() - calibrating
            per_slide[INT8_ENGINE] = float(cost)
            rounds.add(INT8_ENGINE, int8)
    while any(not rates for rates in rounds.rates.values()) or time.perf_counter() + rounds.longest < deadline:
        rounds.run()
    trials = [rounds.trial(name, reference, per_slide.get(name, 0.0)) for name in rounds.nets]
    chosen = pick(trials, len(grid))
    spent = time.perf_counter() - start
    reason = describe(chosen, trials, left_out, grid, len(sample), spent)
    return EngineChoice(chosen.engine, reason, tuple(trials), len(sample), spent, left_out)
