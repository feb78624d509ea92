"""Data sanity (issue 16): `nar data inspect` shows the counts even when it refuses, and
splits whose AUCs cannot be trusted are found, warned of and tagged on the training run."""

import csv
from pathlib import Path

import pytest
from conftest import run_cli

from nar_search.data.sources import open_patch_source
from nar_search.data.splits import split_findings, split_patches
from nar_search.data.synth_patches import write_patches
from nar_search.lightning_modules.training import TrainingConfig
from nar_search.models.reduce import nar_reduce
from nar_search.models.registry import original_spec
from nar_search.search.tracking import Tracker
from nar_search.search.training_run import DATA_WARNINGS_TAG, DataSettings, train_and_record

SPLIT_OF_SLIDE = {"s0": "train", "s1": "train", "s2": "val", "s3": "val", "s4": "test", "s5": "test"}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """72 patches of 32 px (50 µm at 1.5625 µm/px); their labels are the manifests' to give."""
    folder = tmp_path_factory.mktemp("patches")
    write_patches(folder, n=72, seed=0, mpp=1.5625)
    return sorted(folder.glob("til-*/*.png"))


def clean_rows(images: list[Path]) -> list[dict[str, str]]:
    """Six slides of 12 patches, 6 per class; two slides (12 patches of each class) per split."""
    return [
        {"path": str(path), "label": str(i % 2), "slide": f"s{i // 12}", "split": SPLIT_OF_SLIDE[f"s{i // 12}"]}
        for i, path in enumerate(images)
    ]


def write_manifest(path: Path, rows: list[dict[str, str]], columns=("path", "label", "slide", "split")) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def val_copied_to_test(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The user's manifest: test lists the val patches again."""
    kept = [row for row in rows if row["split"] != "test"]
    return kept + [{**row, "split": "test"} for row in rows if row["split"] == "val"]


def reasons(manifest: Path) -> list[str]:
    dataset = open_patch_source(manifest)
    return [finding.reason for finding in split_findings(dataset, split_patches(dataset))]


def table_rows(output: str) -> list[list[str]]:
    """The cells of each line of rich tables."""
    return [line.replace("│", " ").replace("|", " ").split() for line in output.splitlines()]


def test_clean_splits_raise_no_findings(images, tmp_path):
    assert reasons(write_manifest(tmp_path / "clean.csv", clean_rows(images))) == []


def test_a_class_with_fewer_than_ten_patches_in_a_split_is_found(images, tmp_path):
    rows = clean_rows(images)
    val_positives = [row for row in rows if row["split"] == "val" and row["label"] == "1"]
    scarce = [row for row in rows if row not in val_positives[4:]]
    assert reasons(write_manifest(tmp_path / "scarce.csv", scarce)) == ["val has 4 til-positive"]


def test_val_and_test_sharing_patches_is_found(images, tmp_path):
    rows = val_copied_to_test(clean_rows(images))
    without_slides = write_manifest(tmp_path / "copied.csv", rows, columns=("path", "label", "split"))
    assert reasons(without_slides) == ["val and test share 24 patches"]
    with_slides = write_manifest(tmp_path / "copied_slides.csv", rows)
    assert reasons(with_slides) == ["val and test share 24 patches", "val and test share 2 slides"]


def test_a_patch_named_by_two_paths_is_one_patch(images, tmp_path):
    rows = clean_rows(images)
    first = next(row for row in rows if row["split"] == "train")
    path = Path(first["path"])
    rows.append({**first, "path": f"{path.parent}/../{path.parent.name}/{path.name}", "split": "test", "slide": "s4"})
    assert reasons(write_manifest(tmp_path / "aliased.csv", rows)) == ["train and test share 1 patch"]


def test_a_slide_in_two_splits_is_found(images, tmp_path):
    rows = [{**row, "slide": "s0"} if row["slide"] == "s4" else row for row in clean_rows(images)]
    assert reasons(write_manifest(tmp_path / "leaky.csv", rows)) == ["train and test share 1 slide"]


def test_inspect_shows_the_counts_before_refusing_a_source_it_cannot_split(images, tmp_path, capsys):
    # A Stony Brook label file of patches from two slides: too few slides for three splits.
    label_file = tmp_path / "labels.txt"
    label_file.write_text("".join(f"{path} {i % 2 or -1} slide-{i // 6} 0 0\n" for i, path in enumerate(images[:12])))
    assert run_cli("data", "inspect", str(label_file)) == 2
    captured = capsys.readouterr()
    rows = table_rows(captured.out)
    assert ["all", "12", "6", "6", "2"] in rows
    assert ["slide-0", "6", "3", "3"] in rows and ["slide-1", "6", "3", "3"] in rows
    assert "holds 2 slides: too few to split" in captured.err and "add slides" in captured.err
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.txt"]


def test_inspect_shows_the_counts_before_refusing_a_split_of_one_class(images, tmp_path, capsys):
    rows = [row for row in clean_rows(images) if not (row["split"] == "val" and row["label"] == "1")]
    assert run_cli("data", "inspect", str(write_manifest(tmp_path / "one_class.csv", rows))) == 2
    captured = capsys.readouterr()
    assert ["val", "12", "12", "0", "2"] in table_rows(captured.out)
    assert "AUC is undefined: split val holds only class til-negative" in captured.err


def test_inspect_shows_splits_per_slide_and_warns(images, tmp_path, capsys):
    manifest = write_manifest(tmp_path / "copied.csv", val_copied_to_test(clean_rows(images)))
    assert run_cli("data", "inspect", str(manifest)) == 0
    output = capsys.readouterr().out
    rows = table_rows(output)
    assert ["test", "24", "12", "12", "2"] in rows
    assert ["s2", "24", "12", "12", "val,", "test"] in rows and ["s0", "12", "6", "6", "train"] in rows
    assert "warning: splits val and test share 24 patches (e.g." in " ".join(output.split())
    assert "list each patch in one split" in output


@pytest.mark.slow
def test_training_warns_and_tags_the_run(images, workdir, capsys):
    tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}")  # artifacts go to workdir/mlruns
    manifest = write_manifest(workdir / "copied.csv", val_copied_to_test(clean_rows(images)))
    spec = nar_reduce(original_spec("resnet18", 40), 1)  # 35 px, narrower and shallower
    config = TrainingConfig(epochs=1, batch_size=16, patience=None, accelerator="cpu")
    outcome = train_and_record(tracker, "tests", "tiny", spec, DataSettings(manifest), config, workdir / "run", progress=False)
    tags = tracker.client.get_run(outcome.run_id).data.tags
    assert tags[DATA_WARNINGS_TAG] == "val and test share 24 patches; val and test share 2 slides"
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "val and test share 24 patches" in warnings[0] and "nar data inspect" in warnings[0]
