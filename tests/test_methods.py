"""Reduction methods as registered strategies: the registry, each method's CLI build, trial
suggestions and descriptions, and a new method needing no change outside its own module."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from conftest import run_cli
from optuna.trial import FixedTrial
from pydantic import Field

from nar_search.models.reduce import input_reduce, nar_reduce
from nar_search.models.registry import original_spec
from nar_search.models.spec import ArchSpec
from nar_search.search.config import SearchSpace, StudyConfigError, load_study_config
from nar_search.search.methods import METHODS, Candidate, Dimension, MethodSettings, ReductionMethod, get_method, register
from nar_search.search.methods.nar import GAMMA_CONSTRAINT, INPUT_CONSTRAINT
from nar_search.search.study.space import baseline_params, grid_search_space, suggest

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def resnet() -> ArchSpec:
    return original_spec("resnetv2_50", 240)


def build(name: str, original: ArchSpec, phi: float = 0.0, **settings: Any) -> Candidate:
    method = get_method(name)
    return method.candidate(original, phi, method.settings(settings))


def space(**search: Any) -> SearchSpace:
    return SearchSpace.model_validate(search)


BAYES = {"phi": {"low": 0, "high": 3}, "methods": {"nar": {"alpha": {"low": 1.0, "high": 1.6}, "beta": {"low": 1.0, "high": 1.3}}}}


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
    mixed = space(phi=[0, 1, 2], methods={"nar": {}, "ir": {}, "resrep": {"flops_target": [0.5]}})
    assert grid_search_space(mixed) == {"phi": [1.0, 2.0], "method": ["nar", "ir", "resrep"], "flops_target": [0.5]}
    assert baseline_params(mixed) == {"phi": 0.0, "method": "nar"}
    grid = space(phi=[0, 1], methods={"nar": {"alpha": [1.2], "beta": [1.1], "gamma": [1.15, 1.2]}})
    assert grid_search_space(grid) == {"phi": [1.0], "coefficients": ["1.2,1.1,1.15", "1.2,1.1,1.2"]}
    assert baseline_params(grid) == {"phi": 0.0, "coefficients": "1.2,1.1,1.15"}
    baseline = baseline_params(space(**BAYES))  # the paper's α 1.2, β 1.1 as fractions of what ϕ = 0 allows
    assert baseline == {"phi": 0.0, "alpha_fraction": pytest.approx(1 / 3), "beta_fraction": pytest.approx(0.3436, abs=1e-4)}
    # with a list, a categorical's baseline value is one of its choices; a range's is the paper's, so that γ ≥ 1
    assert baseline_params(space(methods={"nar": {"alpha": {"low": 1.7, "high": 1.8}, "beta": [1.05, 1.2]}})) == {
        "phi": 0.0,
        "alpha": 1.2,
        "beta": 1.05,
    }


def test_a_methods_settings_are_checked_where_they_are_written():
    cases = [
        ({"nar": {"alpha": {"low": 1.0, "high": 1.5}, "gamma": 1.2}}, "search.methods: nar: gamma is derived"),
        ({"nar": {"gamma": {"low": 1.0, "high": 1.5}}}, "gamma is a range only through α and β"),
        ({"nar": {"alpha": [0.9, 1.2]}}, "nar: alpha must be ≥ 1"),
        ({"nar": {"alpha": [1.6], "beta": [1.3], "gamma": [1.3]}}, "within 5% of 2"),
        ({"resrep": {"flops_target": [0.5, 1.2]}}, "fraction of the original FLOPs"),
        ({"resrep": {"mask_intervall": 3}}, "resrep.mask_intervall: Extra inputs are not permitted"),
        ({"ir": {"gamma": [1.1, 1.2]}}, "ir.gamma: Input should be a valid number"),
    ]
    for methods, message in cases:
        with pytest.raises(StudyConfigError, match=message):
            load_study_config(None, {"name": "s", "data.source": "patches", "search.methods": methods})


def test_study_files_of_the_earlier_form_read_as_they_meant():
    def search(**earlier: Any) -> SearchSpace:
        return load_study_config(None, {"name": "s", "data.source": "p", "search": earlier}).search

    paper = search(space="paper", methods=["nar", "ir"], phi_values=[0, 1, 2, 3, 4, 5])
    assert paper == space(phi=[0, 1, 2, 3, 4, 5], methods={"nar": {}, "ir": {}})
    bayes = search(space="bayes", alpha={"low": 1.0, "high": 1.6}, tolerance=0.1)
    assert bayes == space(phi=BAYES["phi"], methods={"nar": {**BAYES["methods"]["nar"], "tolerance": 0.1}})
    grid = search(space="grid", gamma_values=[1.15])
    assert grid == space(methods={"nar": {"alpha": [1.1, 1.2, 1.3], "beta": [1.05, 1.1, 1.15], "gamma": [1.15]}})
    assert search(space="ir", methods=["nar", "resrep"]) == space(methods={"ir": {}})
    resrep = search(methods=["resrep"], flops_target_values=[0.5], resrep_mask_interval=1)
    assert resrep == space(methods={"resrep": {"flops_target": [0.5], "mask_interval": 1}})
    with pytest.raises(StudyConfigError, match=r"search\.phi_valus: Extra inputs"):
        search(space="paper", phi_valus=[0, 1])


def test_a_command_called_as_a_function_takes_its_defaults(capsys):
    """As `nar demo` calls train_command: only some arguments, the method and its settings left out."""
    from nar_search.search.cli.reduce import reduce_command

    reduce_command(input_size=48, phi="1", as_json=True)
    assert '"input_size": 42' in capsys.readouterr().out


def test_train_and_reduce_flags_are_the_methods_settings(capsys):
    assert run_cli("reduce", "--input-size", "64", "--phi", "1", "--method", "ir", "--gamma", "1.3", "--json") == 0
    assert '"input_size": 49' in capsys.readouterr().out  # 64 / 1.3
    assert run_cli("reduce", "--alpha", "1.6", "--beta", "1.3") == 2
    assert run_cli("train", "--data", "patches", "--method", "nar", "--flops-target", "0.3") == 2
    first, second = capsys.readouterr().err.strip().splitlines()
    assert "nar: no (α, β, γ) has α·β²·γ² within 5% of 2" in first
    assert "--flops-target is a setting of resrep, not of nar" in second


@pytest.mark.parametrize(
    ("model", "side", "phi", "alpha", "beta"),
    [
        ("resnetv2_50", 48, (0, 3), (1.0, 1.6), (1.0, 1.3)),
        ("resnetv2_50", 64, (0, 5), (1.0, 2.0), (1.0, 1.5)),
        ("resnetv2_50", 240, (0.5, 6), (1.1, 1.3), (1.05, 1.2)),
        ("inception_v4", 96, (0, 4), (1.0, 1.8), (1.0, 1.4)),
    ],
)
def test_every_draw_of_a_feasible_nar_space_is_a_network(model, side, phi, alpha, beta):
    """ϕ first, then α and β as fractions of what ϕ leaves feasible: no draw is void."""
    original = original_spec(model, side)
    bounds = {"phi": {"low": phi[0], "high": phi[1]}}
    search = space(**bounds, methods={"nar": {name: {"low": r[0], "high": r[1]} for name, r in (("alpha", alpha), ("beta", beta))}})
    rng = np.random.default_rng(0)
    corners = [(p, a, b) for p in phi for a in (0.0, 1.0) for b in (0.0, 1.0)]
    for drawn_phi, alpha_fraction, beta_fraction in [*corners, *rng.uniform((phi[0], 0, 0), (phi[1], 1, 1), (400, 3))]:
        trial = FixedTrial({"phi": drawn_phi, "alpha_fraction": alpha_fraction, "beta_fraction": beta_fraction})
        candidate = suggest(trial, search, original)[1]
        assert candidate is not None, trial.params
        r = candidate.spec.reduction
        assert candidate.spec.input_size >= original.min_input_size and r.gamma >= 1
        assert alpha[0] <= r.alpha <= alpha[1] and beta[0] <= r.beta <= beta[1]
        assert r.alpha * r.beta**2 * r.gamma**2 == pytest.approx(2)
        assert max(trial.constraints.values()) <= 0


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_a_sampler_on_the_feasible_space_draws_no_void_point(sampler):
    """The wide box of the study tests, where much of (α, β, ϕ) gives γ < 1 or less than 32 px."""
    small = original_spec("resnetv2_50", 48)
    wide = space(phi=BAYES["phi"], methods={"nar": {"alpha": {"low": 1.2, "high": 1.6}, "beta": {"low": 1.1, "high": 1.3}}})
    samplers = {"tpe": optuna.samplers.TPESampler(seed=0, n_startup_trials=5), "random": optuna.samplers.RandomSampler(seed=0)}
    study = optuna.create_study(sampler=samplers[sampler])
    study.optimize(lambda trial: -suggest(trial, wide, small)[1].spec.reduction.phi, n_trials=40)
    assert len(study.get_trials(states=[optuna.trial.TrialState.COMPLETE])) == 40


def test_nar_records_ranges_that_allow_no_network_as_infeasible(resnet):
    trial = FixedTrial({"phi": 1.0, "alpha_fraction": 0.5, "beta_fraction": 0.5})
    void = space(phi=BAYES["phi"], methods={"nar": {"alpha": {"low": 1.7, "high": 1.8}, "beta": {"low": 1.2, "high": 1.3}}})
    assert suggest(trial, void, resnet)[1] is None  # α·β² > 2 throughout: γ < 1
    assert trial.user_attrs["gamma"] < 1 and trial.constraints[GAMMA_CONSTRAINT] > 0


def test_nar_records_an_input_below_the_minimum_as_infeasible():
    """A point the multi-fidelity benchmark's TPE asked for when α and β were drawn from the box:
    γ = 1.31 at ϕ = 2.93 takes 48 px to 22. A list for α still draws from the box."""
    small = original_spec("resnetv2_50", 48)
    listed = space(phi=BAYES["phi"], methods={"nar": {"alpha": [1.154, 1.16], "beta": {"low": 1.0, "high": 1.3}}})
    trial = FixedTrial({"phi": 2.93, "alpha": 1.154, "beta": 1.007})
    assert suggest(trial, listed, small)[1] is None
    assert trial.constraints[INPUT_CONSTRAINT] == 32 - 22
    feasible = FixedTrial({"phi": 2.85, "alpha": 1.16, "beta": 1.281})
    assert suggest(feasible, listed, small)[1].spec.input_size >= 32
    assert feasible.constraints[INPUT_CONSTRAINT] <= 0


class HalveSettings(MethodSettings):
    divisor: Dimension = Field(default_factory=lambda: [1.0, 2.0])


@pytest.fixture
def fake_method():
    @register
    class Halve(ReductionMethod[HalveSettings]):
        """Divides the input side: a method the rest of the code has never heard of."""

        name = "halve"
        summary = "divide the input side"
        Settings = HalveSettings

        def suggest(self, trial: optuna.Trial, phi: Dimension, settings: HalveSettings, original: ArchSpec) -> Candidate:
            drawn = settings.model_copy(update={"divisor": trial.suggest_categorical("divisor", settings.divisor)})
            return self.candidate(original, 0.0, drawn)

        def grid(self, phi: Dimension, settings: HalveSettings) -> dict[str, list[Any]]:
            return {"divisor": settings.divisor}

        def candidate(self, original: ArchSpec, phi: float, settings: HalveSettings) -> Candidate:
            return Candidate(original.replace(input_size=int(original.input_size // settings.divisor)), settings)

        def describe(self, candidate: Candidate) -> dict[str, float]:
            return {"divisor": candidate.settings.divisor}

        def label(self, candidate: Candidate) -> str:
            return f"halve {candidate.spec.input_size}"

        def slug(self, candidate: Candidate) -> str:
            return f"halve-{candidate.spec.input_size}"

    yield METHODS["halve"]
    METHODS.remove("halve")


def test_a_new_method_joins_studies_by_registering_alone(fake_method, resnet):
    space = load_study_config(None, {"name": "s", "data.source": "patches", "search.methods": ["nar", "halve"]}).search
    grid = grid_search_space(space)
    assert grid == {"phi": [1.0, 2.0, 3.0], "method": ["nar", "halve"], "divisor": [1, 2]}

    def objective(trial: optuna.Trial) -> float:
        method, candidate = suggest(trial, space, resnet)
        trial.set_user_attr("network", (method.name, candidate.spec.input_size))
        return 0.0

    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0))
    study.optimize(objective)  # until the grid is done
    networks = {tuple(t.user_attrs["network"]) for t in study.trials}
    assert {("halve", 240), ("halve", 120)} <= networks and {"nar"} < {name for name, _ in networks}
