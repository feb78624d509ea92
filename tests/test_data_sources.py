import shutil
from pathlib import Path

import pytest
import torch

from nar_search.data.errors import DataError
from nar_search.data.sources import ImagePatches, SlidePatches, SourceOptions, open_patch_source


@pytest.fixture
def two_patches(patch_folder: Path, tmp_path: Path) -> tuple[Path, Path]:
    """One positive and one negative patch copied into tmp_path."""
    positive = next((patch_folder / "til-positive").glob("*.png"))
    negative = next((patch_folder / "til-negative").glob("*.png"))
    return Path(shutil.copy(positive, tmp_path / "pos.png")), Path(shutil.copy(negative, tmp_path / "neg.png"))


def check_item(dataset, index: int, label: int, side: int = 100) -> None:
    image, item_label = dataset[index]
    assert image.shape == (3, side, side) and image.dtype == torch.uint8
    assert item_label == label


def test_folder_with_manifest(patch_folder: Path):
    dataset = open_patch_source(patch_folder)
    assert isinstance(dataset, ImagePatches) and len(dataset) == 60
    assert len(set(dataset.slides)) == 6 and dataset.splits is None
    check_item(dataset, 0, dataset.labels[0])


def test_class_folders(two_patches, tmp_path: Path):
    positive, negative = two_patches
    root = tmp_path / "folders"
    for name, patch in (("1", positive), ("0", negative)):
        (root / name).mkdir(parents=True)
        shutil.copy(patch, root / name / patch.name)
    dataset = open_patch_source(root)
    assert dataset.labels == [0, 1] and dataset.slides is None
    check_item(dataset, 1, 1)

    renamed = tmp_path / "renamed"
    shutil.copytree(root / "1", renamed / "lymphocytes")
    shutil.copytree(root / "0", renamed / "other")
    assert open_patch_source(renamed, SourceOptions(positive=("lymphocytes",))).labels == [1, 0]
    with pytest.raises(DataError, match=r"no class folders named til-negative.*--positive"):
        open_patch_source(renamed)


def test_stony_brook_label_file(two_patches, tmp_path: Path):
    labels = tmp_path / "labels.txt"
    labels.write_text("pos.png 1 TCGA-A1.svs 1000 2000\n\nneg.png -1 TCGA-A1.svs 1100 2000\nneg.png 0 TCGA-B2.svs 50 50\n")
    dataset = open_patch_source(labels)
    assert dataset.labels == [1, 0, 0]
    assert dataset.slides == ["TCGA-A1.svs", "TCGA-A1.svs", "TCGA-B2.svs"]
    check_item(dataset, 0, 1)


def test_manifest_with_splits(two_patches, tmp_path: Path):
    manifest = tmp_path / "patches.csv"
    manifest.write_text("path,label,slide,split\npos.png,1,a,train\nneg.png,0,a,train\npos.png,1,b,val\nneg.png,-1,c,test\n")
    dataset = open_patch_source(manifest)
    assert dataset.labels == [1, 0, 1, 0] and dataset.splits == ["train", "train", "val", "test"]
    check_item(dataset, 3, 0)


def test_slide_coordinates(synthetic_slide: Path, tmp_path: Path):
    coordinates = tmp_path / "coords.csv"
    coordinates.write_text(f"slide,x,y,label\n{synthetic_slide},1000,700,1\n{synthetic_slide},30,30,0\n")
    dataset = open_patch_source(coordinates, patch_side=64)
    assert isinstance(dataset, SlidePatches) and dataset.labels == [1, 0]
    assert dataset.slides == [str(synthetic_slide)] * 2
    check_item(dataset, 0, 1, side=64)
    corner, _ = dataset[1]  # glass, partly past the slide's edge: white, not black
    assert corner.float().mean() > 230
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)
    images, labels = next(iter(loader))
    assert images.shape == (2, 3, 64, 64) and labels.tolist() == [1, 0]


def test_slide_coordinates_use_the_mpp_override(slide_without_mpp: Path, tmp_path: Path):
    coordinates = tmp_path / "coords.csv"
    coordinates.write_text(f"slide,x,y,label\n{slide_without_mpp.name},128,128,1\n")
    shutil.copy(slide_without_mpp, tmp_path)
    with pytest.raises(DataError, match=r"no-mpp.tiff records no microns per pixel.*--mpp"):
        open_patch_source(coordinates)
    dataset = open_patch_source(coordinates, SourceOptions(mpp=0.5))
    assert dataset.patch_px[tmp_path / slide_without_mpp.name] == 100
    check_item(dataset, 0, 1)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("labels.txt", "pos.png 1 s.svs 0 0\nmissing.png 1 s.svs 0 0\n", r"labels.txt line 2: patch .*missing.png does not exist"),
        ("labels.txt", "pos.png 2 s.svs 0 0\n", r"labels.txt line 1: label '2' is not 1 .* or 0/-1"),
        ("labels.txt", "pos.png\n", r"labels.txt line 1: expected '<patch.png> <label> <slide> <x> <y>'"),
        ("labels.txt", "pos.png 1 s.svs\n", r"labels.txt line 1: expected '<patch.png> <label> <slide> <x> <y>'"),
        ("labels.txt", "pos.png 1 s.svs left top\n", r"labels.txt line 1: expected '<patch.png> <label> <slide> <x> <y>'"),
        ("m.csv", "path,label\npos.png,1\nneg.png,yes\n", r"m.csv line 3: label 'yes'"),
        ("m.csv", "path,label,split\npos.png,1,holdout\n", r"m.csv line 2: split 'holdout' is not one of train, val, test"),
        ("m.csv", "image,class\npos.png,1\n", r"m.csv line 1: header 'image,class' is neither"),
        ("c.csv", "slide,x,y,label\nnotes.txt,10,10,1\n", r"c.csv line 2: .*notes.txt is not a whole-slide image"),
        ("c.csv", "slide,x,y,label\nabsent.svs,10,10,1\n", r"c.csv line 2: slide .*absent.svs does not exist"),
        ("notes.json", "{}", r"notes.json: unknown format"),
    ],
)
def test_bad_input_names_file_and_line(two_patches, tmp_path: Path, name: str, text: str, message: str):
    (tmp_path / "notes.txt").write_text("not a slide")
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=message):
        open_patch_source(tmp_path / name)


def test_coordinates_outside_the_slide(synthetic_slide: Path, tmp_path: Path):
    coordinates = tmp_path / "coords.csv"
    coordinates.write_text(f"slide,x,y,label\n{synthetic_slide},100,100,1\n{synthetic_slide},5000,10,1\n")
    with pytest.raises(DataError, match=r"coords.csv line 3: centre \(5000, 10\) lies outside"):
        open_patch_source(coordinates)


def test_unreadable_image_is_named_with_its_line(two_patches, tmp_path: Path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    labels = tmp_path / "labels.txt"
    labels.write_text("pos.png 1 s.svs 0 0\nbroken.png 0 s.svs 0 0\n")
    dataset = open_patch_source(labels)
    check_item(dataset, 0, 1)
    with pytest.raises(DataError, match=r"labels.txt line 2: cannot read image .*broken.png"):
        dataset[1]


def test_missing_source(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        open_patch_source(tmp_path / "nowhere.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        open_patch_source(tmp_path / "empty")
