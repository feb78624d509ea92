"""Seconds per training epoch of a (reduced) network on synthetic patches, at the paper's
input sides: 1,000 patches, resnetv2_50, base side 240, ϕ = 0 and 2 by default.

    .venv/bin/python bench/epoch_time.py --patches 1000 --phi 0 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from nar_search.data.synth_patches import write_patches
from nar_search.lightning_modules.classifier import PatchClassifier
from nar_search.lightning_modules.datamodule import PatchDataModule
from nar_search.models.reduce import nar_reduce
from nar_search.models.registry import original_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=1000)
    parser.add_argument("--model", default="resnetv2_50")
    parser.add_argument("--input-size", type=int, default=240)
    parser.add_argument("--phi", type=float, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        write_patches(Path(folder), n=args.patches, seed=0)
        for phi in args.phi:
            spec = nar_reduce(original_spec(args.model, args.input_size), phi)
            # Every patch in the training split: the epoch is over all of them.
            data = PatchDataModule(folder, spec.input_size, args.batch_size, num_workers=2, val_fraction=0.01, test_fraction=0.01)
            data.setup()
            trainer = pl.Trainer(
                max_epochs=1,
                accelerator="auto",
                logger=False,
                enable_checkpointing=False,
                limit_val_batches=0,
                enable_model_summary=False,
                enable_progress_bar=True,
            )
            start = time.perf_counter()
            trainer.fit(PatchClassifier(spec.to_dict()), train_dataloaders=data.train_dataloader())
            seconds = time.perf_counter() - start
            print(
                f"{args.model} ϕ={phi:g} at {spec.input_size} px: one epoch of {data.num_train} patches "
                f"in {seconds:.1f} s ({data.num_train / seconds:.1f} patches/s, {torch.get_num_threads()} threads)"
            )


if __name__ == "__main__":
    main()
