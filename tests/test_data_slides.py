import json
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
import torch
from PIL import Image
from skimage.color import rgb2hsv

from nar_search.data.errors import DataError
from nar_search.data.slides import SlideHandles, open_slide, read_patch, slide_mpp
from nar_search.data.synth_slide import read_slide_truth, truth_paths, write_synthetic_slide
from nar_search.data.tiling import SlideTileDataset, detect_tissue, hsv_saturation, tile_slide


@pytest.mark.slow
def test_synthetic_slide_opens_with_its_mpp_and_pyramid(synthetic_slide: Path):
    assert openslide.OpenSlide.detect_format(synthetic_slide) == "generic-tiff"
    with openslide.OpenSlide(synthetic_slide) as slide:
        assert slide_mpp(slide, synthetic_slide) == pytest.approx(0.5)
        assert slide.dimensions == (2048, 1536)
        assert slide.level_count == 4  # 2048, 1024, 512, 256 px wide: tiles of 256
        assert slide.level_downsamples == pytest.approx((1, 2, 4, 8))
        corner = np.asarray(slide.read_region((0, 0), 0, (64, 64)))[..., :3]
        assert corner.mean() > 230  # glass


def test_the_slide_folder_holds_slides_only(synthetic_slide: Path):
    """WSInfer takes every entry of its slide folder for a slide and refuses two files of one
    stem (slide.mask.png, slide.mask.json): the truth goes into the folder beside it."""
    assert list(synthetic_slide.parent.iterdir()) == [synthetic_slide]
    truth = synthetic_slide.parent.with_name(f"{synthetic_slide.parent.name}-truth")
    assert truth_paths(synthetic_slide) == (truth / "slide.mask.png", truth / "slide.mask.json")
    assert json.loads((truth / "slide.mask.json").read_text())["slide"] == synthetic_slide.name


@pytest.mark.parametrize("existing", ["slide", "mask", "sidecar"])
def test_a_synthetic_slide_never_overwrites_a_file(tmp_path: Path, existing: str):
    out = tmp_path / "slides" / "s.tiff"
    target = {"slide": out, "mask": truth_paths(out)[0], "sidecar": truth_paths(out)[1]}[existing]
    target.parent.mkdir(parents=True)
    target.write_text("a user's file")
    with pytest.raises(DataError, match=f"{target.name} already exists.*choose another --out"):
        write_synthetic_slide(out, width=256, height=256, tile=128)
    assert target.read_text() == "a user's file"
    assert [p for p in (out, *truth_paths(out)) if p.exists()] == [target]  # nothing written


def test_a_bare_slide_name_gets_its_truth_beside_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert truth_paths(Path("s.tiff"))[0] == tmp_path.resolve() / "work-truth" / "s.mask.png"


def test_tiling_finds_the_tissue_and_the_til_regions(synthetic_slide: Path):
    grid = tile_slide(synthetic_slide)
    truth = read_slide_truth(synthetic_slide)
    assert grid.mpp == pytest.approx(0.5) and grid.patch_px == 100
    assert (grid.coords % 100 == 0).all()

    tiled_fraction = len(grid) * grid.patch_px**2 / (2048 * 1536)
    assert tiled_fraction == pytest.approx(truth.tissue.mean(), abs=0.05)

    # Every patch centred in a TIL-rich region is kept.
    top_left = np.stack(np.meshgrid(np.arange(0, 2048 - 99, 100), np.arange(0, 1536 - 99, 100)), -1).reshape(-1, 2)
    centre = (top_left + 50) // truth.downsample
    til_patches = {tuple(xy) for xy in top_left[truth.til_region[centre[:, 1], centre[:, 0]]]}
    assert len(til_patches) >= 10
    recall = len(til_patches & {tuple(xy) for xy in grid.coords}) / len(til_patches)
    assert recall > 0.95


def test_tissue_detection_agrees_with_the_truth(synthetic_slide: Path):
    grid = tile_slide(synthetic_slide, skip_blank=False)
    truth = read_slide_truth(synthetic_slide)
    detected = np.asarray(Image.fromarray(grid.tissue).resize(truth.tissue.shape[::-1], Image.Resampling.NEAREST))
    iou = (detected & truth.tissue).sum() / (detected | truth.tissue).sum()
    assert iou > 0.9


def test_blank_glass_is_not_tissue():
    glass = np.random.default_rng(0).normal(245, 3, (200, 200, 3)).clip(0, 255).astype(np.uint8)
    assert not detect_tissue(glass, pixel_um=4.0).any()


def test_tile_dataset_reads_patches_at_any_side(synthetic_slide: Path):
    grid = tile_slide(synthetic_slide)
    for side in (100, 32):
        image, index = SlideTileDataset(grid, side)[len(grid) // 2]
        assert image.shape == (3, side, side) and image.dtype == torch.uint8 and index == len(grid) // 2
    loader = torch.utils.data.DataLoader(SlideTileDataset(grid, 48), batch_size=4, num_workers=2)
    images, indices = next(iter(loader))
    assert images.shape == (4, 3, 48, 48) and indices.tolist() == [0, 1, 2, 3]


def test_patches_past_the_edge_are_flattened_on_white(synthetic_slide: Path):
    with openslide.OpenSlide(synthetic_slide) as slide:
        patch = read_patch(slide, (2048 - 50, 0), 100, 100)
    assert patch.shape == (100, 100, 3)
    assert (patch[:, 60:] == 255).all()


def test_best_level_is_used_for_downsampled_reads(synthetic_slide: Path):
    with openslide.OpenSlide(synthetic_slide) as slide:
        full = read_patch(slide, (800, 600), 400, 400)
        reduced = read_patch(slide, (800, 600), 400, 100)  # read from level 2, no resampling
        assert np.array_equal(reduced, np.asarray(slide.read_region((800, 600), 2, (100, 100)).convert("RGB")))
    assert full.shape == (400, 400, 3)


def test_slide_without_mpp_needs_an_override(slide_without_mpp: Path):
    with pytest.raises(DataError, match=r"no microns per pixel.*--mpp"):
        tile_slide(slide_without_mpp)
    assert tile_slide(slide_without_mpp, mpp=0.25, skip_blank=False).patch_px == 200


def test_not_a_slide(tmp_path: Path):
    path = tmp_path / "notes.svs"
    path.write_text("not a slide")
    with pytest.raises(DataError, match=r"notes\.svs is not a whole-slide image.*corrupt or unreadable"):
        open_slide(path)
    flat = tmp_path / "photo.tif"  # a TIFF, but flat, as an image editor saves it: not a damaged slide
    tifffile.imwrite(flat, np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(DataError, match=r"photo\.tif .* may be a flat image, not a tiled pyramidal slide"):
        open_slide(flat)
    with pytest.raises(DataError, match="does not exist"):
        tile_slide(tmp_path / "missing.svs")


def test_slide_handles_are_per_process(synthetic_slide: Path):
    handles = SlideHandles(keep_open=1)
    first = handles(synthetic_slide)
    assert handles(synthetic_slide) is first
    import pickle

    copy = pickle.loads(pickle.dumps(handles))
    assert copy(synthetic_slide) is not first


def test_saturation_is_skimages_hsv_saturation():
    rgb = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    rgb[:8] = 0  # black: no hue, saturation 0
    rgb[8:16] = 200  # grey
    assert np.array_equal(hsv_saturation(rgb), (rgb2hsv(rgb)[..., 1] * 255).astype(np.uint8))
