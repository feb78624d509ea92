import csv
from pathlib import Path

import numpy as np
import openslide
import pytest
from conftest import run_cli
from PIL import Image

from nar_search.data.synth_patches import DIFFICULTIES, generate_patches, write_patches
from nar_search.data.synth_slide import read_slide_truth


def test_patches_are_deterministic_and_balanced():
    first = list(generate_patches(12, seed=3))
    again = list(generate_patches(12, seed=3))
    other = list(generate_patches(12, seed=4))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, again))
    assert not np.array_equal(first[0].image, other[0].image)
    assert first[0].image.shape == (100, 100, 3) and first[0].image.dtype == np.uint8
    assert sum(p.label for p in first) == 6


@pytest.mark.parametrize("difficulty", list(DIFFICULTIES))
def test_labels_follow_the_lymphocyte_count(difficulty):
    for patch in generate_patches(20, seed=0, difficulty=difficulty):
        assert (patch.lymphocytes >= 2) == bool(patch.label)


@pytest.mark.slow
def test_resolution_and_label_noise():
    patches = list(generate_patches(200, seed=1, mpp=1.0, label_noise=0.25))
    assert patches[0].image.shape == (50, 50, 3)
    flipped = np.mean([(p.lymphocytes >= 2) != bool(p.label) for p in patches])
    assert 0.15 < flipped < 0.35


def test_patches_come_from_slides_of_their_own_stain():
    patches = list(generate_patches(40, seed=0, slides=4))
    slides = [p.slide for p in patches]
    assert sorted(set(slides)) == [f"slide-{i:03d}" for i in range(4)]
    assert slides == sorted(slides)  # consecutive patches share a slide


def test_write_patches_layout(tmp_path: Path):
    manifest = write_patches(tmp_path, n=10, seed=0)
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 10 and set(rows[0]) == {"path", "label", "slide"}
    for row in rows:
        assert row["path"].startswith({"0": "til-negative/", "1": "til-positive/"}[row["label"]])
        assert Image.open(tmp_path / row["path"]).size == (100, 100)


def test_cli_synth_patches(tmp_path: Path):
    assert run_cli("data", "synth-patches", "--out", str(tmp_path), "--n", "8", "--seed", "1", "--difficulty", "hard") == 0
    assert len(list((tmp_path / "til-positive").glob("*.png"))) == 4
    assert (tmp_path / "manifest.csv").is_file()


def test_cli_synth_slide(tmp_path: Path):
    out = tmp_path / "s.svs.tiff"
    assert run_cli("data", "synth-slide", "--out", str(out), "--width", "640", "--height", "480", "--tile", "128", "--aperio") == 0
    with openslide.OpenSlide(out) as slide:
        assert openslide.OpenSlide.detect_format(out) == "aperio"
        assert slide.properties[openslide.PROPERTY_NAME_MPP_X] == "0.5"
        assert slide.properties[openslide.PROPERTY_NAME_OBJECTIVE_POWER] == "20"
        assert slide.level_count == 4
    truth = read_slide_truth(out)
    assert truth.tissue.any() and truth.til_region.any()


@pytest.mark.slow
def test_cli_reports_bad_input_in_one_line(tmp_path: Path, capsys):
    assert run_cli("data", "synth-slide", "--out", str(tmp_path / "s.tiff"), "--tile", "100") == 2
    assert "multiple of 16" in capsys.readouterr().err


def test_cli_inspect(patch_folder: Path, capsys):
    assert run_cli("data", "inspect", str(patch_folder)) == 0
    output = capsys.readouterr().out
    assert "60 patches" in output and "Patch splits" in output
