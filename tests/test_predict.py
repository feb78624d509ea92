"""nar predict (issues 7, 15, 30): TIL maps of a synthetic slide from an export folder (the
formats, the 50 µm grid, agreement with the slide's ground truth), bad input refused in one
line, and runs over many slides: resumed, split into shards, listed in a table."""

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image
from sklearn.metrics import roc_auc_score
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from nar_search.data.synth_slide import read_slide_truth, write_synthetic_slide
from nar_search.data.tiling import SlideTileDataset, tile_slide
from nar_search.models.errors import ModelError
from nar_search.models.export import export_model, load_export
from nar_search.models.spec import ArchSpec, register_spec
from nar_search.prediction import engine_choice, reading
from nar_search.prediction.network import training_preprocessing
from nar_search.prediction.reading import SlideStripDataset, collate_without_blanks

DARK = 0.45  # brightness (0-1) below which a pixel is hematoxylin-dense, as lymphocyte nuclei are
EVEN_SHARE = 0.04  # share of dark pixels at which a patch is as likely TIL-positive as not


class DarkNuclei(nn.Module):
    """A known TIL detector that needs no training: the share of very dark pixels in a patch."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.brightness = nn.Conv2d(3, 1, 1)
        self.head = nn.Linear(1, num_classes)
        with torch.no_grad():
            # Undo the normalisation and average R, G and B.
            self.brightness.weight.copy_(torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1) / 3)
            self.brightness.bias.fill_(sum(IMAGENET_DEFAULT_MEAN) / 3)
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[1] = 100.0
            self.head.bias[1] = -100.0 * EVEN_SHARE

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dark_share = torch.sigmoid(40 * (DARK - self.brightness(images))).mean((2, 3))
        return self.head(dark_share)


@register_spec
@dataclass(frozen=True, kw_only=True)
class DarkNucleiSpec(ArchSpec):
    family: ClassVar[str] = "test-dark-nuclei"

    def build(self) -> nn.Module:
        return DarkNuclei(self.num_classes)


@pytest.fixture(scope="module", autouse=True)
def quick_engine_choice():
    """--engine auto (the default) measures the engines for a fraction of a second, not
    CHOICE_SECONDS: these tests check maps, not how well auto times (test_prediction_engine_choice)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_choice, "CHOICE_SECONDS", 0.2)
        yield


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    """The detector exported like any trained network (50 px inputs: 1 µm/px)."""
    spec = DarkNucleiSpec(model_name="dark-nuclei", input_size=50)
    return export_model(spec.build(), spec, training_preprocessing(spec), tmp_path_factory.mktemp("exports") / "dark-nuclei")


UMASK = 0o027  # the group may read, others not: neither the default umask nor mkdtemp's 0o077


@pytest.fixture(scope="module")
def maps(detector, synthetic_slide, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("maps")
    umask = os.umask(UMASK)
    try:
        assert (
            run_cli("predict", synthetic_slide, "--model", detector, "--out", out, "--batch-size", 32, "--workers", 2, "--device", "cpu")
            == 0
        )
    finally:
        os.umask(umask)
    return out / synthetic_slide.stem


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open() as file:
        rows = list(csv.reader(file))
    return rows[0], np.array(rows[1:], float).reshape(-1, len(rows[0]))


@pytest.mark.slow
def test_every_format_holds_the_same_patches(maps, synthetic_slide):
    name = synthetic_slide.stem
    assert {p.name for p in maps.iterdir()} == {
        f"prediction-{name}",
        f"{name}.csv",
        f"{name}.geojson",
        f"{name}.heatmap.png",
        "summary.json",
    }
    header, boxes = read_csv(maps / f"{name}.csv")
    assert header == ["minx", "miny", "width", "height", "prob_til-negative", "prob_til-positive"]
    til = boxes[:, 5]
    assert np.allclose(boxes[:, 4] + til, 1, atol=2e-6)
    stony_brook = np.loadtxt(maps / f"prediction-{name}", ndmin=2)
    assert stony_brook.shape == (len(boxes), 3) and len(boxes) > 50
    assert np.array_equal(stony_brook[:, :2], boxes[:, :2] + boxes[:, 2:4] / 2)  # patch centres
    assert np.allclose(stony_brook[:, 2], til) and ((til >= 0) & (til <= 1)).all()

    geojson = json.loads((maps / f"{name}.geojson").read_text())
    assert geojson["type"] == "FeatureCollection" and len(geojson["features"]) == len(boxes)
    for feature, (x, y, w, h, negative, p) in zip(geojson["features"], boxes):
        assert feature["geometry"] == {"type": "Polygon", "coordinates": [[[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]]}
        properties = feature["properties"]
        assert properties["objectType"] == "tile"
        assert properties["classification"]["name"] == ("til-positive" if p >= 0.5 else "til-negative")
        assert len(properties["classification"]["color"]) == 3
        assert properties["measurements"] == {
            "prob_til-negative": pytest.approx(negative, abs=1e-6),
            "prob_til-positive": pytest.approx(p, abs=1e-6),
        }

    summary = json.loads((maps / "summary.json").read_text())
    assert summary["patches"] == 20 * 15 and summary["tissue_patches"] == len(boxes)
    assert summary["blank_patches"] == len(tile_slide(synthetic_slide, skip_blank=False)) - len(tile_slide(synthetic_slide))
    assert summary["til_positive_fraction"] == pytest.approx(np.mean(til >= 0.5))
    assert summary["seconds"] > 0 and summary["patches_per_second"] > 0


def test_the_csv_columns_are_wsinfers_for_the_exports_classes(maps, detector, synthetic_slide):
    """WSInfer names a column prob_<class name> for each class of the model's config.json."""
    header, _ = read_csv(maps / f"{synthetic_slide.stem}.csv")
    class_names = json.loads((detector / "config.json").read_text())["class_names"]
    assert header[4:] == [f"prob_{name}" for name in class_names]


VIRIDIS_ENDS = {"low": (68, 1, 84), "high": (253, 231, 37)}  # viridis at 0 and at 1


def test_the_heat_map_has_a_colour_bar_a_scale_bar_and_a_title(maps, synthetic_slide):
    heatmap = Image.open(maps / f"{synthetic_slide.stem}.heatmap.png")
    assert heatmap.mode == "RGB" and max(heatmap.size) >= 1024
    pixels = np.asarray(heatmap).astype(int)
    # The map is blended with the thumbnail, so pure viridis ends are the colour bar's: 1 above
    # 0, in the same columns, right of the map (the slide is 4:3, so the map's right edge is at
    # 1024 + margin).
    ends = {name: np.argwhere((np.abs(pixels - colour) <= 6).all(axis=2)) for name, colour in VIRIDIS_ENDS.items()}
    assert len(ends["low"]) > 20 and len(ends["high"]) > 20
    assert set(ends["low"][:, 1]) == set(ends["high"][:, 1]) and ends["low"][:, 1].min() > 1024
    assert ends["high"][:, 0].max() < ends["low"][:, 0].min()
    map_top, map_bottom = ends["high"][:, 0].min(), ends["low"][:, 0].max()  # the colour bar spans the map's height
    # The title: dark text on the white band above the map.
    above_map = pixels[:map_top]
    assert (above_map == 255).all(axis=2).mean() > 0.8 and (above_map < 80).all(axis=2).sum() > 200
    # The scale bar below the map: 2048 px at 0.5 µm over 1024 map pixels is 1 µm per pixel, and
    # the longest round length within a quarter of the map's width is 200 µm, 200 pixels.
    assert max(longest_run((row < 40).all(axis=1)) for row in pixels[map_bottom + 1 :]) == 200


def longest_run(flags: np.ndarray) -> int:
    """The most True values in a row."""
    longest = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        longest = max(longest, run)
    return longest


@pytest.mark.parametrize("um_per_pixel, longest, expected", [(1, 256, 200), (2, 256, 500), (0.37, 300, 100), (12.5, 256, 2000)])
def test_the_scale_bar_is_the_longest_round_length_that_fits(um_per_pixel, longest, expected):
    from nar_search.prediction.outputs import scale_bar_um

    assert scale_bar_um(um_per_pixel, longest) == expected


def test_the_heat_maps_viridis_is_matplotlibs():
    from matplotlib import colormaps

    from nar_search.prediction.outputs import viridis

    values = np.linspace(0, 1, 1001)
    theirs = np.asarray(colormaps["viridis"](values))[:, :3] * 255
    # 17 steps interpolated, against matplotlib's 256 levels looked up
    assert np.abs(viridis(values).astype(float) - theirs).max() <= 6


def test_the_maps_are_as_readable_as_the_umask_makes_new_files(maps):
    assert maps.stat().st_mode & 0o777 == 0o777 & ~UMASK
    assert {path.stat().st_mode & 0o777 for path in maps.iterdir()} == {0o666 & ~UMASK}


@pytest.mark.parametrize("side", [35, 50, 100])  # resampled from level 1, level 1 as it is, level 0 as it is
def test_patches_read_by_rows_equal_patches_read_one_by_one(synthetic_slide, side):
    grid = tile_slide(synthetic_slide, skip_blank=False)
    one_by_one, by_rows = SlideTileDataset(grid, side), SlideStripDataset(grid, side)
    indices = list(range(10, 50))
    for (patch, index), expected in zip(by_rows.__getitems__(indices), indices):
        assert index == expected and torch.equal(patch, one_by_one[index][0])


@pytest.mark.parametrize("side, downsample", [(100, 1), (50, 2)])  # read from level 0, level 1
def test_patches_are_read_band_by_band_row_by_row(synthetic_slide, monkeypatch, side, downsample):
    monkeypatch.setattr(reading, "BAND_PX", 256)
    grid = tile_slide(synthetic_slide, skip_blank=False)
    order = SlideStripDataset(grid, side).band_order()
    assert sorted(order) == list(range(len(grid)))
    x, y = grid.coords[order].T
    band = x // (256 * downsample)
    assert len(np.unique(band)) == 2048 // (256 * downsample) and (np.diff(band) >= 0).all()
    within_band = np.diff(band) == 0
    assert (np.diff(y)[within_band] >= 0).all()
    assert (np.diff(x)[within_band & (np.diff(y) == 0)] > 0).all()


def test_near_blank_patches_are_left_out_as_they_are_read():
    glass = torch.full((3, 50, 50), 235, dtype=torch.uint8)
    tissue = torch.randint(60, 220, (3, 50, 50), dtype=torch.uint8)
    batch = collate_without_blanks([(glass, 0), (tissue, 1), (glass + 5, 2)])
    assert batch.indices.tolist() == [1] and batch.patches.shape == (1, 3, 50, 50) and batch.read == 3


def test_patches_are_50_um_at_the_slides_mpp(maps, synthetic_slide, detector, tmp_path):
    _, boxes = read_csv(maps / f"{synthetic_slide.stem}.csv")
    patch_px = 50 / 0.5  # the slide records 0.5 µm/px
    assert (boxes[:, 2:4] == patch_px).all() and (boxes[:, :2] % patch_px == 0).all()
    assert json.loads((maps / "summary.json").read_text())["patch_um"] == 50
    # Told it is a 40x slide, the same slide is cut into 200 px patches.
    assert run_cli("predict", synthetic_slide, "--model", detector, "--out", tmp_path, "--mpp", 0.25, "--workers", 0) == 0
    _, boxes = read_csv(tmp_path / synthetic_slide.stem / f"{synthetic_slide.stem}.csv")
    assert len(boxes) and (boxes[:, 2:4] == 200).all() and (boxes[:, :2] % 200 == 0).all()


def test_the_til_map_agrees_with_the_ground_truth(maps, synthetic_slide):
    _, boxes = read_csv(maps / f"{synthetic_slide.stem}.csv")
    truth = read_slide_truth(synthetic_slide)
    centres = ((boxes[:, :2] + boxes[:, 2:4] / 2) // truth.downsample).astype(int)
    in_til_region = truth.til_region[centres[:, 1], centres[:, 0]]
    assert truth.tissue[centres[:, 1], centres[:, 0]].mean() > 0.9  # the map covers tissue
    assert 0 < in_til_region.sum() < len(boxes)
    assert roc_auc_score(in_til_region, boxes[:, 5]) > 0.9
    assert np.mean((boxes[:, 5] >= 0.5) == in_til_region) > 0.8


def test_an_unreadable_slide_is_reported_and_the_others_mapped(detector, synthetic_slide, tmp_path, capsys):
    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / "good.tiff").symlink_to(synthetic_slide)
    (slides / "broken.svs").write_text("not a slide")
    (slides / "notes.txt").write_text("not a slide suffix: not picked up from a folder")
    assert run_cli("predict", slides, "--model", detector, "--out", tmp_path / "maps", "--workers", 0) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error:") and "broken.svs" in errors[0]
    assert (tmp_path / "maps" / "good" / "summary.json").is_file() and not (tmp_path / "maps" / "broken").exists()


def test_a_slide_without_mpp_needs_mpp(detector, slide_without_mpp, tmp_path, capsys):
    assert run_cli("predict", slide_without_mpp, "--model", detector, "--out", tmp_path) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "--mpp" in error and len(error.splitlines()) == 1
    assert run_cli("predict", slide_without_mpp, "--model", detector, "--out", tmp_path, "--mpp", 0.5) == 0
    summary = json.loads((tmp_path / slide_without_mpp.stem / "summary.json").read_text())
    assert (summary["mpp"], summary["tissue_patches"]) == (0.5, 0)  # plain grey: no tissue, empty maps


def tamper(path: Path) -> None:
    """Overwrite up to 1 MB at the end of the file with 0xFF bytes, keeping its size."""
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(max(0, size - 2**20))
        file.write(b"\xff" * min(size, 2**20))


def test_a_tampered_export_is_refused(detector, tmp_path):
    model = shutil.copytree(detector, tmp_path / "tampered")
    load_export(model)  # intact, it loads
    tamper(model / "model.safetensors")
    with pytest.raises(ModelError, match=r"model\.safetensors has changed since it was exported") as error:
        load_export(model)
    assert "export the model again" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("problem", ["missing export", "spec and weights disagree", "tampered weights", "not a slide"])
def test_bad_input_is_one_clear_line(problem, detector, synthetic_slide, tmp_path, capsys):
    model, slide = detector, synthetic_slide
    if problem == "missing export":
        model, expected = tmp_path / "no-such-export", "not found"
    elif problem == "spec and weights disagree":
        model, expected = shutil.copytree(detector, tmp_path / "mixed"), "do not fit"
        spec = json.loads((model / "spec.json").read_text())
        (model / "spec.json").write_text(json.dumps(spec | {"num_classes": 3}))
        # Checksums as if exported so, to reach the weights check behind them.
        metadata = json.loads((model / "metadata.json").read_text())
        metadata["sha256"]["spec.json"] = hashlib.sha256((model / "spec.json").read_bytes()).hexdigest()
        (model / "metadata.json").write_text(json.dumps(metadata))
    elif problem == "tampered weights":
        model, expected = shutil.copytree(detector, tmp_path / "tampered"), "model.safetensors has changed"
        tamper(model / "model.safetensors")
    else:
        slide, expected = tmp_path / "slide.svs", "is not a whole-slide image"
        slide.write_bytes(b"II*\x00 not really a TIFF")
    # Only the torch engine rebuilds the network from spec.json and the weights; ONNX Runtime runs
    # model.onnx, checked against that network at export and by its checksum since.
    engine = ["--engine", "torch"] if problem == "spec and weights disagree" else []
    assert run_cli("predict", slide, "--model", model, "--out", tmp_path / "maps", *engine) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and expected in error and len(error.splitlines()) == 1
    if problem != "not a slide":  # a refused model leaves no --out behind
        assert not (tmp_path / "maps").exists()


@pytest.mark.parametrize("problem", ["out under a file", "out is a file", "mpp of 1000", "mpp of 0"])
def test_bad_options_are_refused_before_any_work(problem, detector, synthetic_slide, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("nar_search.prediction.run.load_export", lambda folder: pytest.fail("the model was loaded"))
    (tmp_path / "file").write_text("a user's file")
    out, extra = tmp_path / "maps", []
    if problem == "out under a file":
        out, expected = tmp_path / "file" / "maps", "cannot write to --out"
    elif problem == "out is a file":
        out, expected = tmp_path / "file", "is a file, not a folder"
    else:
        extra, expected = ["--mpp", problem.split()[-1]], "at most 50"
    assert run_cli("predict", synthetic_slide, "--model", detector, "--out", out, *extra) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and expected in error and len(error.splitlines()) == 1
    assert (tmp_path / "file").read_text() == "a user's file"


def test_an_existing_out_is_written_into_only_with_overwrite(detector, synthetic_slide, tmp_path, capsys):
    name = synthetic_slide.stem
    out = tmp_path / "maps"
    (out / name).mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / name / "annotations.geojson").write_text("mine too")
    (out / name / "summary.json").write_text("an earlier run's")
    arguments = ["predict", synthetic_slide, "--model", detector, "--out", out, "--workers", 0]
    assert run_cli(*arguments) == 2
    error = capsys.readouterr().err.strip()
    assert "--overwrite" in error and "notes.txt" in error and len(error.splitlines()) == 1
    assert (out / name / "summary.json").read_text() == "an earlier run's"

    assert run_cli(*arguments, "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / name / "annotations.geojson").read_text() == "mine too"
    assert json.loads((out / name / "summary.json").read_text())["tissue_patches"] > 50
    assert {p.name for p in out.iterdir()} == {"notes.txt", name, "slides.csv"}  # no staging left behind
    assert {f"{name}.csv", f"prediction-{name}", f"{name}.heatmap.png"} < {p.name for p in (out / name).iterdir()}


@pytest.mark.slow
@pytest.mark.parametrize(
    "command, asked, sleeps",
    [("predict", None, True), ("predict", "ACTIVE", False), ("train", None, False)],
)
def test_openmp_threads_sleep_in_nar_predict_unless_told_otherwise(command, asked, sleeps):
    """Spinning OpenMP threads starve the patch readers, sleeping ones slow training
    (bench/README.md). The policy must be set before torch loads libgomp, which shows what it
    read with OMP_DISPLAY_ENV: a spin count of 0 for sleeping threads, 300000 by default."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    env |= {"OMP_DISPLAY_ENV": "verbose"} | ({"OMP_WAIT_POLICY": asked} if asked else {})
    code = f"import sys; sys.argv = ['nar', '{command}']; import nar_search.search.cli.app, torch"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    spin_count = re.search(r"GOMP_SPINCOUNT\s*=\s*'(\d+)'", result.stderr)
    assert spin_count, result.stderr[-2000:]
    assert (spin_count.group(1) == "0") == sleeps


@pytest.fixture(scope="module")
def three_slides(tmp_path_factory) -> Path:
    """A folder of three tiny slides (1024 × 768 px at 0.5 µm/px), named out of order."""
    folder = tmp_path_factory.mktemp("three") / "slides"
    folder.mkdir()
    for seed, name in enumerate(["c", "a", "b"]):
        write_synthetic_slide(folder / f"{name}.tiff", width=1024, height=768, mpp=0.5, seed=seed, tile=256)
    return folder


def read_table(path: Path) -> dict[str, dict[str, str]]:
    """The run's table of slides, by slide file name."""
    with path.open() as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["slide", "patches", "tissue_patches", "til_positive_fraction", "seconds", "status", "reason"]
    return {Path(row["slide"]).name: row for row in rows}


def map_files(out: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in out.glob("*/*")}


@pytest.mark.slow
def test_a_second_run_maps_only_the_slides_without_a_map_by_this_model(detector, three_slides, tmp_path, capsys):
    out = tmp_path / "maps"
    arguments = ["predict", three_slides, "--model", detector, "--out", out, "--workers", 0]
    assert run_cli(*arguments) == 0
    first = read_table(out / "slides.csv")
    assert [row["status"] for row in first.values()] == ["mapped"] * 3
    summary = json.loads((out / "a" / "summary.json").read_text())
    assert summary["model"]["sha256"] == load_export(detector).sha256
    assert first["a.tiff"]["tissue_patches"] == str(summary["tissue_patches"]) and int(first["a.tiff"]["patches"]) == 10 * 7
    assert float(first["a.tiff"]["til_positive_fraction"]) == summary["til_positive_fraction"]

    shutil.rmtree(out / "b")  # as if the run had stopped before b
    kept = map_files(out)
    capsys.readouterr()
    assert run_cli(*arguments) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum("skipped 2 slides" in line for line in lines) == 1 and not any(line.startswith("a.tiff") for line in lines)
    assert all(map_files(out)[path] == mtime for path, mtime in kept.items())  # a and c untouched
    second = read_table(out / "slides.csv")
    assert {name: row["status"] for name, row in second.items()} == {"a.tiff": "skipped", "b.tiff": "mapped", "c.tiff": "skipped"}
    assert second["a.tiff"]["tissue_patches"] == first["a.tiff"]["tissue_patches"]  # from a's summary.json

    assert run_cli(*arguments, "--overwrite") == 0  # maps every slide again
    assert [row["status"] for row in read_table(out / "slides.csv").values()] == ["mapped"] * 3
    assert all(map_files(out)[path] != mtime for path, mtime in kept.items())


@pytest.mark.parametrize("made_by", ["another export", "INT8", "an older nar"])
def test_maps_by_another_model_are_replaced_only_with_overwrite(made_by, detector, three_slides, tmp_path, capsys):
    out = tmp_path / "maps"
    arguments = ["predict", three_slides, "--model", detector, "--out", out, "--workers", 0]
    assert run_cli(*arguments) == 0
    summary = json.loads((out / "b" / "summary.json").read_text())
    if made_by == "another export":
        summary["model"]["sha256"] = "0" * 64
    elif made_by == "INT8":  # as --engine onnx-int8 makes them, not auto
        summary["model"]["engine"] = "onnx-int8"
        del summary["model"]["engine_choice"]
    else:
        del summary["model"]
    (out / "b" / "summary.json").write_text(json.dumps(summary))
    before, table = map_files(out), (out / "slides.csv").read_text()
    capsys.readouterr()
    assert run_cli(*arguments) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and " b " in error and "--overwrite" in error and len(error.splitlines()) == 1
    assert map_files(out) == before and (out / "slides.csv").read_text() == table  # nothing written


def test_shards_split_the_sorted_slides_and_write_a_table_each(detector, three_slides, tmp_path):
    out = tmp_path / "maps"
    for shard in ("1/2", "2/2"):
        assert run_cli("predict", three_slides, "--model", detector, "--out", out, "--workers", 0, "--shard", shard) == 0
    tables = {shard: read_table(out / f"slides-{shard}-of-2.csv") for shard in (1, 2)}
    assert list(tables[1]) == ["a.tiff", "c.tiff"] and list(tables[2]) == ["b.tiff"]
    assert all(row["status"] == "mapped" for table in tables.values() for row in table.values())
    assert {path.name for path in out.iterdir()} == {"a", "b", "c", "slides-1-of-2.csv", "slides-2-of-2.csv"}
    # More shards than slides: an empty one says so and leaves an empty table.
    assert run_cli("predict", three_slides, "--model", detector, "--out", out, "--shard", "4/4") == 0
    assert (out / "slides-4-of-4.csv").read_text().strip() == "slide,patches,tissue_patches,til_positive_fraction,seconds,status,reason"


@pytest.mark.parametrize("shard", ["0/2", "3/2", "2", "a/b", "1/0"])
def test_a_bad_shard_is_one_line_before_any_work(shard, detector, three_slides, tmp_path, capsys):
    assert run_cli("predict", three_slides, "--model", detector, "--out", tmp_path / "maps", "--shard", shard) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "K from 1 to N" in error and "$SLURM_ARRAY_TASK_ID" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "maps").exists()


def test_the_table_lists_failed_slides_with_the_reason(detector, three_slides, tmp_path):
    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / "a.tiff").symlink_to(three_slides / "a.tiff")
    (slides / "broken.svs").write_text("not a slide")
    out = tmp_path / "maps"
    assert run_cli("predict", slides, "--model", detector, "--out", out, "--workers", 0) == 2
    table = read_table(out / "slides.csv")
    assert table["a.tiff"]["status"] == "mapped" and float(table["a.tiff"]["seconds"]) > 0
    broken = table["broken.svs"]
    assert broken["status"] == "failed" and "not a whole-slide image" in broken["reason"] and broken["tissue_patches"] == ""


def test_a_table_of_the_same_name_that_nar_did_not_write_is_kept(detector, three_slides, tmp_path, capsys):
    out = tmp_path / "maps"
    out.mkdir()
    (out / "slides.csv").write_text("my,own,table\n")
    arguments = ["predict", three_slides / "a.tiff", "--model", detector, "--out", out, "--workers", 0]
    assert run_cli(*arguments) == 2
    error = capsys.readouterr().err.strip()
    assert "slides.csv" in error and "--overwrite" in error and len(error.splitlines()) == 1
    assert (out / "slides.csv").read_text() == "my,own,table\n" and not (out / "a").exists()
    assert run_cli(*arguments, "--overwrite") == 0 and read_table(out / "slides.csv")["a.tiff"]["status"] == "mapped"
