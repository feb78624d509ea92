"""Reduction methods as registered strategies: the registry, each method's CLI build, trial
suggestions and descriptions, and a new method needing no change outside its own module."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import run_cli
from optuna.trial import FixedTrial

from nar_search.models.reduce import input_reduce, nar_reduce
from nar_search.models.registry import original_spec
from nar_search.models.spec import ArchSpec
from nar_search.search.config import SearchSpace, StudyConfigError, load_study_config
from nar_search.search.methods import METHODS, Candidate, ReductionMethod, ReductionOptions, get_method, register
from nar_search.search.methods.nar import GAMMA_CONSTRAINT, INPUT_CONSTRAINT
from nar_search.search.study.space import baseline_params, grid_search_space, methods, suggest_method

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def resnet() -> ArchSpec:
    return original_spec("resnetv2_50", 240)


def build(name: str, original: ArchSpec, **options: Any) -> Candidate:
    return get_method(name).from_options(original, ReductionOptions(**options))


def test_importing_the_package_registers_every_method_and_stays_light():
    heavy = "{'optuna', 'lightning', 'mlflow'} & set(sys.modules)"
    code = f"import sys, search.methods as m; print(sorted(m.METHODS), {heavy})"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['ir', 'nar', 'resrep'] set()"


def test_an_unknown_method_is_one_line_naming_the_known_ones(capsys):
    with pytest.raises(ValueError, match="unknown method 'nas': choose from nar, ir, resrep"):
        get_method("nas")
    with pytest.raises(StudyConfigError, match=r"search\.methods: unknown method 'nas'"):
        load_study_config(None, {"name": "s", "data.source": "patches", "search.methods": ["nar", "nas"]})
    assert run_cli("train", "--data", "patches", "--method", "nas") == 2
    assert run_cli("reduce", "--method", "resrep") == 2
    first, second = capsys.readouterr().err.strip().splitlines()
    assert "unknown method 'nas': choose from nar, ir, resrep" in first and "nar train --method resrep" in second


def test_cli_builds_give_the_networks_they_gave_before(resnet):
    nar = build("nar", resnet, phi=2).spec
    assert nar == nar_reduce(resnet, 2)
    assert nar.input_size == 181 and nar.depths == (2, 3, 4, 2)
    ir = build("ir", resnet, phi=5).spec
    assert ir == input_reduce(resnet, 5)
    assert ir.input_size == 119 and (ir.depths, ir.mid_widths) == (resnet.depths, resnet.mid_widths)
    assert build("nar", resnet, phi=1, rounding="divisible8").spec == nar_reduce(resnet, 1, rounding="divisible8")


def test_resrep_trains_the_original_network_with_its_pruning_hooks(resnet):
    from nar_search.lightning_modules.resrep import ResRepCallback

    resrep = get_method("resrep")
    candidate = build("resrep", resnet, flops_target=0.3, mask_interval=7, warmup_epochs=1, max_new=9)
    assert candidate.spec == resnet
    hooks = resrep.training(candidate)
    assert hooks.spec.reduction.method == "resrep" and hooks.spec.reduction.flops_target == 0.3
    (callback,) = hooks.callbacks
    assert isinstance(callback, ResRepCallback) and hooks.finalize is not None
    assert (callback.mask_interval, callback.warmup_epochs, callback.max_new) == (7, 1, 9)
    assert resrep.expected_gflops(candidate) == pytest.approx(0.3 * get_method("nar").expected_gflops(candidate))
    for name in ("nar", "ir"):
        plain = build(name, resnet, phi=1)
        assert get_method(name).training(plain).spec == plain.spec and get_method(name).key_suffix(plain) == ""


def test_each_method_describes_its_candidates(resnet):
    cases = [
        ("nar", dict(phi=2), dict(alpha=1.2, beta=1.1, gamma=1.15, phi=2.0), "nar ϕ2 α1.2 β1.1 γ1.15", "nar-phi2"),
        ("ir", dict(phi=3), {"phi": 3.0}, "ir ϕ3", "ir-phi3"),
        ("resrep", dict(flops_target=0.5), {"flops_target": 0.5}, "resrep ε0.5", "resrep-0.5"),
    ]
    for name, options, attrs, label, slug in cases:
        method, candidate = get_method(name), build(name, resnet, **options)
        assert (method.describe(candidate), method.label(candidate), method.slug(candidate)) == (attrs, label, slug)
    assert get_method("resrep").key_suffix(build("resrep", resnet, flops_target=0.5)) == "-resrep0.5"
    assert get_method("nar").heading(build("nar", resnet, phi=1)) == "NAR α=1.2 β=1.1 γ=1.15 (paper rounding)"
    assert get_method("ir").heading(build("ir", resnet, phi=1)) == "IR"


def test_grid_and_baseline_gather_what_each_method_of_the_study_adds():
    mixed = SearchSpace(space="paper", methods=["nar", "ir", "resrep"], phi_values=[0, 1, 2], flops_target_values=[0.5])
    assert grid_search_space(mixed) == {"phi": [1.0, 2.0], "method": ["nar", "ir", "resrep"], "flops_target": [0.5]}
    assert baseline_params(mixed) == {"phi": 0.0, "method": "nar"}
    grid = SearchSpace(space="grid", alpha_values=[1.2], beta_values=[1.1], gamma_values=[1.15, 1.2], phi_values=[0, 1])
    assert grid_search_space(grid) == {"phi": [1.0], "coefficients": ["1.2,1.1,1.15", "1.2,1.1,1.2"]}
    assert baseline_params(grid) == {"phi": 0.0, "coefficients": "1.2,1.1,1.15"}
    assert baseline_params(SearchSpace(space="bayes")) == {"phi": 0.0, "alpha": 1.2, "beta": 1.1}
    assert methods(SearchSpace(space="ir", methods=["nar", "resrep"])) == ["ir"]


def test_nar_records_a_derived_gamma_below_one_as_infeasible(resnet):
    trial = FixedTrial({"phi": 1.0, "alpha": 1.6, "beta": 1.3})
    assert get_method("nar").suggest(trial, SearchSpace(space="bayes"), resnet) is None
    assert trial.user_attrs["gamma"] < 1 and trial.constraints[GAMMA_CONSTRAINT] > 0


def test_nar_records_an_input_below_the_minimum_as_infeasible():
    """A point the multi-fidelity benchmark's TPE asked for: γ = 1.31 at ϕ = 2.93 takes 48 px to 22."""
    small = original_spec("resnetv2_50", 48)
    trial = FixedTrial({"phi": 2.93, "alpha": 1.154, "beta": 1.007})
    assert get_method("nar").suggest(trial, SearchSpace(space="bayes"), small) is None
    assert trial.constraints[INPUT_CONSTRAINT] == 32 - 22
    feasible = FixedTrial({"phi": 2.85, "alpha": 1.16, "beta": 1.281})
    assert get_method("nar").suggest(feasible, SearchSpace(space="bayes"), small).spec.input_size >= 32
    assert feasible.constraints[INPUT_CONSTRAINT] <= 0


@pytest.fixture
def fake_method():
    @register
    class Halve(ReductionMethod):
        """Halves the input side: a method the rest of the code has never heard of."""

        name = "halve"
        summary = "half the input side"

        def suggest(self, trial: optuna.Trial, space: SearchSpace, original: ArchSpec) -> Candidate:
            return self._divided(original, trial.suggest_int("divisor", 1, 2))

        def grid(self, space: SearchSpace) -> dict[str, list[Any]]:
            return {"divisor": [1, 2]}

        def from_options(self, original: ArchSpec, options: ReductionOptions) -> Candidate:
            return self._divided(original, 2)

        def describe(self, candidate: Candidate) -> dict[str, float]:
            return dict(candidate.settings)

        def label(self, candidate: Candidate) -> str:
            return f"halve {candidate.spec.input_size}"

        def slug(self, candidate: Candidate) -> str:
            return f"halve-{candidate.spec.input_size}"

        @staticmethod
        def _divided(original: ArchSpec, divisor: int) -> Candidate:
            return Candidate(original.replace(input_size=original.input_size // divisor), {"divisor": divisor})

    yield METHODS["halve"]
    del METHODS["halve"]


def test_a_new_method_joins_studies_by_registering_alone(fake_method, resnet):
    space = load_study_config(None, {"name": "s", "data.source": "patches", "search.methods": ["nar", "halve"]}).search
    grid = grid_search_space(space)
    assert grid == {"phi": [1.0, 2.0, 3.0], "method": ["nar", "halve"], "divisor": [1, 2]}

    def objective(trial: optuna.Trial) -> float:
        method = suggest_method(trial, space)
        trial.set_user_attr("network", (method.name, method.suggest(trial, space, resnet).spec.input_size))
        return 0.0

    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0))
    study.optimize(objective)  # until the grid is done
    networks = {tuple(t.user_attrs["network"]) for t in study.trials}
    assert {("halve", 240), ("halve", 120)} <= networks and {"nar"} < {name for name, _ in networks}
