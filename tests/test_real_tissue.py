"""Real H&E tiles read as they come (class folders named by tissue, the source image in each
file name): the task options, splits by source image, one training epoch (issue 25)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from nar_search.data.errors import DataError
from nar_search.data.sources import SourceOptions, open_patch_source
from nar_search.data.splits import split_patches
from nar_search.lightning_modules.datamodule import PatchDataModule
from nar_search.lightning_modules.training import TrainingConfig, train_spec
from nar_search.models.reduce import nar_reduce
from nar_search.models.registry import original_spec

TILES = Path(__file__).parent / "data" / "kather2016"
SOURCE = r"CRC-Prim-HE-\d+"
LYMPHOCYTES = SourceOptions(positive=("04_LYMPHO",), exclude=("08_EMPTY",), slide_pattern=SOURCE)


def test_class_folders_read_as_a_task():
    dataset = open_patch_source(TILES, LYMPHOCYTES)
    assert len(dataset) == 30 and sum(dataset.labels) == 10  # 08_EMPTY's 2 tiles left out
    assert set(dataset.classes) == {"01_TUMOR", "02_STROMA", "04_LYMPHO"}
    assert all(label == (kind == "04_LYMPHO") for label, kind in zip(dataset.labels, dataset.classes))
    assert sorted(set(dataset.slides)) == [f"CRC-Prim-HE-0{n}" for n in (1, 2, 5, 6, 7)]
    image, _ = dataset[0]
    assert image.shape == (3, 150, 150) and image.dtype == torch.uint8


def test_a_slide_pattern_group_names_the_slide():
    dataset = open_patch_source(TILES, SourceOptions(positive=("04_LYMPHO",), slide_pattern=r"HE-(\d+)_"))
    assert sorted(set(dataset.slides)) == ["01", "02", "05", "06", "07"]
    assert len(dataset) == 32


@pytest.mark.parametrize(
    "options, message",
    [
        (
            SourceOptions(positive=("LYMPHO",)),
            r"no class folder 'LYMPHO' \(--positive / data.positive\); its folders are 01_TUMOR, 02_STROMA",
        ),
        (SourceOptions(positive=("04_LYMPHO",), exclude=("09_X",)), r"no class folder '09_X' \(--exclude / data.exclude\)"),
        (SourceOptions(positive=("04_LYMPHO",), exclude=("04_LYMPHO",)), "both --positive and --exclude"),
        (SourceOptions(positive=("01_TUMOR", "02_STROMA", "04_LYMPHO"), exclude=("08_EMPTY",)), "no class folder is left for the negative"),
        (SourceOptions(positive=("04_LYMPHO",), slide_pattern="TCGA-\\d+"), "the slide pattern 'TCGA-.*finds no slide name"),
        (SourceOptions(positive=("04_LYMPHO",), slide_pattern="HE-(\\d+"), "is not a regular expression"),
        (SourceOptions(), r"no class folders named til-negative, til-positive, 0, 1: name the positive class's folders with --positive"),
    ],
)
def test_options_that_do_not_fit_are_refused_with_the_fix(options, message):
    with pytest.raises(DataError, match=message):
        open_patch_source(TILES, options)


def test_task_options_on_a_source_that_is_not_class_folders(patch_folder: Path, tmp_path: Path):
    with pytest.raises(DataError, match="not a folder of class folders: --positive and --exclude name class folders"):
        open_patch_source(patch_folder, SourceOptions(positive=("til-positive",)))
    with pytest.raises(DataError, match="names each patch's slide itself: leave out --slide-pattern"):
        open_patch_source(patch_folder, SourceOptions(slide_pattern="slide"))


@pytest.mark.parametrize("seed", range(5))
def test_splits_keep_sources_apart_and_hold_both_classes(seed):
    dataset = open_patch_source(TILES, LYMPHOCYTES)
    splits = split_patches(dataset, seed=seed)
    slides, labels = np.array(dataset.slides), np.array(dataset.labels)
    held = [set(slides[indices]) for indices in splits.values()]
    assert [len(sources) for sources in held] == [3, 1, 1]
    assert not (held[0] & held[1] or held[0] & held[2] or held[1] & held[2])
    assert all(set(labels[indices]) == {0, 1} for indices in splits.values())


def test_a_grouped_split_avoids_a_split_of_one_class():
    """Source a holds almost all positives: a plain random draw of test slides often leaves
    train or test without them."""
    slides = np.array(["a"] * 20 + ["b"] * 10 + ["c"] * 10 + ["d"] * 10 + ["e"] * 10 + ["f"] * 12)
    labels = np.array([1] * 18 + [0] * 2 + [0] * 20 + [1] * 2 + [0] * 8 + [0] * 10 + [1] * 6 + [0] * 6)
    from nar_search.data.splits import _split_slides

    for seed in range(20):
        splits = _split_slides(slides, labels, 1, 1, seed)
        assert all(set(labels[indices]) == {0, 1} for indices in splits.values()), seed


def test_inspect_shows_the_task_classes_and_sources(capsys):
    code = run_cli("data", "inspect", TILES, "--positive", "04_LYMPHO", "--exclude", "08_EMPTY", "--slide-pattern", SOURCE)
    out = capsys.readouterr().out
    assert code == 0
    assert "task: 04_LYMPHO against every other class folder; 08_EMPTY left out" in out
    assert "Class folders" in out and "02_STROMA" in out and "08_EMPTY │" not in out
    assert "CRC-Prim-HE-05" in out and "holds 2 til-positive" in out  # 2 tiles a class and source: too few, said


@pytest.mark.slow
def test_one_epoch_on_real_tiles(tmp_path: Path):
    spec = nar_reduce(original_spec("resnet18", 40), 1)
    datamodule = PatchDataModule(TILES, input_size=spec.input_size, batch_size=8, source_options=LYMPHOCYTES)
    config = TrainingConfig(epochs=1, batch_size=8, patience=None, accelerator="cpu")
    result = train_spec(spec, datamodule, config, tmp_path, progress=False)
    assert result.runs[0].epochs == 1 and 0.0 <= result.runs[0].test_auc <= 1.0
    assert datamodule.slides_by_split()["test"] and not set(datamodule.slides_by_split()["test"]) & set(
        datamodule.slides_by_split()["train"]
    )


def test_a_last_batch_of_one_patch_is_not_trained_on(tmp_path: Path):
    """k·batch + 1 training patches at an input whose last map is 1 × 1: BatchNorm cannot
    normalise one value per channel, so that batch must not reach the network."""
    rows = ["path,label,slide,split"]
    tiles = sorted(TILES.glob("0[124]_*/*.jpg"), key=lambda tile: tile.name)  # classes mixed
    for index, tile in enumerate(tiles):
        split = "train" if index < 17 else ("val" if index % 2 else "test")
        rows.append(f"{tile},{int('04_LYMPHO' in str(tile))},{re.search(SOURCE, tile.name).group(0)},{split}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    datamodule = PatchDataModule(manifest, input_size=32, batch_size=8)
    datamodule.setup()
    assert datamodule.num_train == 17 and [len(b[1]) for b in datamodule.train_dataloader()] == [8, 8]
    spec = original_spec("resnet18", 32)  # 32 px: a 1 × 1 map in the last stage
    config = TrainingConfig(epochs=1, batch_size=8, patience=None, accelerator="cpu")
    assert train_spec(spec, datamodule, config, tmp_path / "run", progress=False).runs[0].epochs == 1


@pytest.mark.slow
def test_nar_train_reads_the_task_and_records_the_splits(workdir: Path):
    tracking = f"sqlite:///{workdir / 'mlflow.db'}"
    task = ["--positive", "04_LYMPHO", "--exclude", "08_EMPTY", "--slide-pattern", SOURCE]
    options = ["--model", "resnet18", "--input-size", 32, "--epochs", 1, "--batch-size", 8, "--tracking-uri", tracking]
    assert run_cli("train", "--data", TILES, *task, *options, "--run-dir", workdir / "run") == 0
    from mlflow import MlflowClient

    client = MlflowClient(tracking)
    run = client.search_runs([client.get_experiment_by_name("nar-train").experiment_id])[0]
    assert run.data.params["data.positive"] == "04_LYMPHO" and run.data.params["data.slide_pattern"] == SOURCE
    splits = json.loads(Path(client.download_artifacts(run.info.run_id, "splits.json", str(workdir))).read_text())
    assert sorted(slide for slides in splits.values() for slide in slides) == [f"CRC-Prim-HE-0{n}" for n in (1, 2, 5, 6, 7)]


def test_a_study_file_takes_the_same_keys(tmp_path: Path):
    from nar_search.search.config import load_study_config
    from nar_search.search.training_run import DataSettings

    study = tmp_path / "study.yaml"
    study.write_text(f"name: real\ndata:\n  source: {TILES}\n  positive: [04_LYMPHO]\n  exclude: [08_EMPTY]\n  slide_pattern: '{SOURCE}'\n")
    data = DataSettings(**load_study_config(study, {}).data.model_dump())
    datamodule = data.datamodule(32, TrainingConfig(batch_size=8))
    datamodule.setup()
    assert datamodule.num_train + datamodule.num_val + datamodule.num_test == 30
    assert all(len(slides) for slides in datamodule.slides_by_split().values())


@pytest.mark.parametrize("pattern", [r"HE-(0[12])?", r"(Z*)"])
def test_a_slide_pattern_that_finds_an_empty_name_is_refused(pattern):
    with pytest.raises(DataError, match="finds no slide name in this file name"):
        open_patch_source(TILES, SourceOptions(positive=("04_LYMPHO",), slide_pattern=pattern))


def test_a_missing_folder_or_excluded_class_is_named(tmp_path: Path):
    with pytest.raises(DataError, match="nowhere does not exist"):
        open_patch_source(tmp_path / "nowhere", LYMPHOCYTES)
    with pytest.raises(DataError, match=r"no class folder '08_EMPTI' \(--exclude"):
        open_patch_source(TILES, SourceOptions(exclude=("08_EMPTI",)))


def test_a_study_refuses_a_task_that_does_not_fit_before_it_exists(workdir: Path, capsys):
    study = workdir / "study.yaml"
    study.write_text(f"name: real\ndata:\n  source: {TILES}\n  positive: [LYMPHO]\n")
    assert run_cli("study", "run", study) != 0
    assert "no class folder 'LYMPHO'" in capsys.readouterr().err
    assert not (workdir / "studies").exists() and not (workdir / "mlflow").exists()


def test_the_demo_finds_its_study_file_and_tiles():
    from nar_search.search.cli.demo import DEMO_CONFIG, TILES

    assert DEMO_CONFIG.is_file() and (TILES / "04_LYMPHO").is_dir()
