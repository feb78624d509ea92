"""nar predict's outputs across calls (issue 30, item 6): the table of slides keeps earlier calls'
rows, the latest per slide; summary.json says where the MPP came from; a corrupt slide is
named corrupt in one line, and nothing of it is written."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import run_cli
from test_predict import detector, quick_engine_choice, read_table, three_slides  # noqa: F401  (module fixtures, shared)


def predict(detector: Path, out: Path, *slides_and_options: object) -> int:  # noqa: F811
    """nar predict, patches read in the main process unless the options say otherwise (the last wins)."""
    return run_cli("predict", "--model", detector, "--out", out, "--workers", 0, *slides_and_options)


def test_the_table_of_slides_keeps_earlier_calls_the_latest_row_per_slide(detector, three_slides, tmp_path):  # noqa: F811
    out = tmp_path / "maps"
    assert predict(detector, out, three_slides / "a.tiff", three_slides / "b.tiff") == 0
    assert predict(detector, out, three_slides / "b.tiff", three_slides / "c.tiff") == 0
    table = read_table(out / "slides.csv")
    assert {name: row["status"] for name, row in table.items()} == {"a.tiff": "mapped", "b.tiff": "skipped", "c.tiff": "mapped"}
    assert len((out / "slides.csv").read_text().splitlines()) == 1 + 3  # one row per slide
    assert {path.name for path in out.iterdir()} == {"a", "b", "c", "slides.csv"}  # written whole: nothing staged left


def test_the_summary_says_where_the_mpp_came_from(detector, three_slides, tmp_path):  # noqa: F811
    slide = three_slides / "a.tiff"
    assert predict(detector, tmp_path / "recorded", slide) == 0
    assert predict(detector, tmp_path / "given", slide, "--mpp", 0.25) == 0
    for out, mpp, source in ((tmp_path / "recorded", 0.5, "slide metadata"), (tmp_path / "given", 0.25, "--mpp")):
        summary = json.loads((out / "a" / "summary.json").read_text())
        assert (summary["mpp"], summary["mpp_source"]) == (mpp, source)


def damage_tiles(slide: Path, copy: Path) -> None:
    """`copy` of the slide with the tiles of every level but the smallest (the thumbnail's)
    overwritten with noise: it opens and tiles, and fails when its patches are read."""
    shutil.copyfile(slide, copy)
    with tifffile.TiffFile(copy) as tiff:
        tiles = [(offset, count) for page in tiff.pages[:-1] for offset, count in zip(page.dataoffsets, page.databytecounts)]
    noise = np.random.default_rng(0)
    with copy.open("r+b") as file:
        for offset, count in tiles:
            file.seek(offset)
            file.write(noise.bytes(count))


@pytest.mark.parametrize(
    "damage, options",
    [("garbage bytes", []), ("damaged tiles", []), ("damaged tiles", ["--engine", "onnx", "--workers", 1])],  # the last read in a worker
)
def test_a_corrupt_slide_is_one_line_that_names_it_corrupt(damage, options, detector, three_slides, tmp_path, capsys):  # noqa: F811
    slide = tmp_path / ("broken.svs" if damage == "garbage bytes" else "broken.tiff")
    if damage == "garbage bytes":
        slide.write_bytes(np.random.default_rng(0).bytes(5000))
    else:
        damage_tiles(three_slides / "a.tiff", slide)
    out = tmp_path / "maps"
    assert predict(detector, out, slide, *options) == 2  # nothing could be read
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error:") and str(slide) in errors[0]
    assert "corrupt or unreadable" in errors[0] and "QuPath" in errors[0]  # the problem and the fix
    assert "Traceback" not in captured.err + captured.out
    assert not (out / "broken").exists()
    failed = read_table(out / "slides.csv")[slide.name]
    assert failed["status"] == "failed" and "corrupt or unreadable" in failed["reason"]
