"""`nar demo`: the whole story on the embedded defaults (SQLite, the local MLflow store) and
real H&E tiles shipped in samples/kather2016: a base network trained as a user would bring
it, then a study that finds cheaper networks starting from it, inheriting its weights and
learning from it."""

from __future__ import annotations

import os
from pathlib import Path

from nar_search.search.cli.console import console
from nar_search.search.errors import StudyConfigError

ROOT = Path(__file__).resolve().parents[2]  # search/cli/demo.py → the repository
DEMO_CONFIG = ROOT / "configs" / "demo.yaml"
TILES = ROOT / "samples" / "kather2016"
# Named apart from the synthetic demo's demo/base, which an older checkout may have left.
BASE = Path("demo/base-real")
MAX_AUC_DROP = 0.01  # the margin the demo states its reduced networks against
# The base's training: its val AUC peaked at the 3rd of 6 epochs on these tiles (0.9997).
BASE_EPOCHS = 4


def demo_command() -> None:
    """Train a base network on real H&E tiles (immune cells against other tissue), search cheaper
    ones from it, print the front. Writes demo/, studies/, runs/ and mlflow/store/ in the working folder."""
    from nar_search.search.exclusive import exclusive

    with exclusive(Path.cwd(), "the working folder", "wait for that demo to end, or run the demo in another folder"):
        _demo()


def _demo() -> None:
    from nar_search.search.cli.study import run_command
    from nar_search.search.cli.train import train_command
    from nar_search.search.config import load_study_config
    from nar_search.search.front import pareto
    from nar_search.search.study.lookup import load_study
    from nar_search.search.study.record import TrialRecord

    config = load_study_config(DEMO_CONFIG, {"data.source": str(TILES)})
    data, training = config.data, config.training
    if BASE.exists() and not (BASE / "model.safetensors").exists():
        raise StudyConfigError(f"{BASE} holds no trained network (an interrupted demo?): move it away and run the demo again")
    if not BASE.exists():
        staging = BASE.with_name(f".{BASE.name}.{os.getpid()}.partial")  # in place only once trained: a stop leaves no half base
        console.print(
            f"training the base network ({config.model} at {config.input_size} px) on the real H&E tiles of {TILES} "
            f"into {BASE}: the network a user brings"
        )
        # A constant rate, as the candidates train at: in the demo's few epochs, annealing gave nothing.
        train_command(
            data=TILES,
            model=config.model,
            input_size=config.input_size,
            epochs=BASE_EPOCHS,
            batch_size=training.batch_size,
            seed=training.seed,
            val_fraction=data.val_fraction,
            test_fraction=data.test_fraction,
            scheduler="none",
            patience=0,
            positive=list(data.positive),
            exclude=list(data.exclude),
            slide_pattern=data.slide_pattern,
            experiment="demo-base",
            run_dir=staging,
        )
        staging.rename(BASE)
        console.print(f"the base network is in {BASE}")
    run_command(config_file=DEMO_CONFIG, data=TILES)
    _, study = load_study(DEMO_CONFIG, None, None)
    chosen, reference = pareto.select(study, MAX_AUC_DROP), pareto.baseline(study)
    if chosen is None or reference is None:
        return  # the study said what failed and how to resume
    base = TrialRecord.of(reference)
    over_seeds = chosen.seeds > 1 and chosen.mean_val_auc is not None and chosen.mean_test_auc is not None
    val, test = (chosen.mean_val_auc, chosen.mean_test_auc) if over_seeds else (chosen.val_auc, chosen.test_auc)
    console.print(
        f"the cheapest network within {MAX_AUC_DROP} val AUC of the base: trial {chosen.trial} ({chosen.method}), "
        f"{chosen.reduction:.1f}× fewer GFLOPs, val AUC {val:.3f} against {base.val_auc:.3f}, "
        f"test AUC {test:.3f} against {base.test_auc:.3f}"
        + (f" (means over {chosen.seeds} seeds)" if over_seeds else "")
        + " (test: source images neither network trained on)"
    )
