"""The training progress bar, counting epochs as users do: `--epochs 2` shows Epoch 1/2 and
Epoch 2/2, where Lightning's own bar counts from 0 and shows Epoch 0/1 and Epoch 1/1."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class EpochProgressBar(RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None:
            description += f"/{self.trainer.max_epochs}"
        # As wide as the validation bar's description, so the two do not flicker.
        return f"{description:{len(self.validation_description)}}"
