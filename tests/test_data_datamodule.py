from pathlib import Path

import numpy as np
import pytest
import torch

from nar_search.data.errors import DataError
from nar_search.lightning_modules.datamodule import PatchDataModule


def make_module(source: Path, **options) -> PatchDataModule:
    module = PatchDataModule(source, **{"input_size": 32, "batch_size": 8, **options})
    module.setup("fit")
    return module


def test_splits_keep_slides_apart(patch_folder: Path):
    module = make_module(patch_folder, seed=1)
    slides = np.array(module.dataset.slides)
    split_slides = {name: set(slides[indices]) for name, indices in module.splits.items()}
    assert not split_slides["train"] & split_slides["val"]
    assert not split_slides["train"] & split_slides["test"]
    assert not split_slides["val"] & split_slides["test"]
    assert module.num_train + module.num_val + module.num_test == 60
    assert [s.slides for s in module.summary()] == [4, 1, 1]
    again = make_module(patch_folder, seed=1)
    assert all(np.array_equal(module.splits[name], again.splits[name]) for name in module.splits)


def test_batches_are_resized_and_normalised(patch_folder: Path):
    module = make_module(patch_folder, input_size=48)
    images, labels = next(iter(module.val_dataloader()))
    assert images.shape == (8, 3, 48, 48) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert -2.5 < images.mean() < 2.5 and images.min() < 0  # ImageNet-normalised
    assert module.mean == pytest.approx((0.485, 0.456, 0.406)) and len(module.std) == 3
    assert len(module.predict_dataloader().dataset) == 60


def test_only_training_patches_are_augmented(patch_folder: Path):
    module = make_module(patch_folder)
    train, val = module.train_dataloader().dataset, module.val_dataloader().dataset
    torch.manual_seed(0)
    assert any(not torch.equal(train[0][0], train[0][0]) for _ in range(5))
    assert torch.equal(val[0][0], val[0][0])
    plain = make_module(patch_folder, augment=False).train_dataloader().dataset
    assert torch.equal(plain[0][0], plain[0][0])


def test_single_class_split_is_refused(tmp_path: Path, patch_folder: Path):
    rows = ["path,label,slide,split"]
    for index, row in enumerate((patch_folder / "manifest.csv").read_text().splitlines()[1:]):
        path, label, slide = row.split(",")
        split = "val" if index < 20 and label == "1" else ("test" if index < 20 else "train")
        rows.append(f"{patch_folder / path},{label},{slide},{split}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="AUC is undefined: split val holds only class til-positive; add patches of both classes"):
        make_module(manifest)


def test_too_few_slides_to_split(tmp_path: Path, patch_folder: Path):
    lines = (patch_folder / "manifest.csv").read_text().splitlines()
    manifest = tmp_path / "manifest.csv"
    two_slides = [f"{patch_folder}/{line}" for line in lines[1:] if "slide-000" in line or "slide-001" in line]
    manifest.write_text("\n".join([lines[0], *two_slides]))
    with pytest.raises(DataError, match="holds 2 slides: too few to split"):
        make_module(manifest)


def test_source_without_slides_warns_and_stratifies(patch_folder: Path, tmp_path: Path):
    for name in ("til-negative", "til-positive"):
        (tmp_path / name).symlink_to(patch_folder / name)
    with pytest.warns(UserWarning, match="names no slides: splitting per patch"):
        module = make_module(tmp_path)
    assert [s.per_class for s in module.summary()] == [(18, 18), (6, 6), (6, 6)]
