"""The elastic network (issue 31): every reduced network of the base runs on the base's shared
weights, equals what inheriting from them gives, and trains them."""

import signal

import pytest
import torch

from nar_search.lightning_modules.elastic import SandwichTraining, recalibrate_norms, sliced_val_auc, train_elastic
from nar_search.models.elastic import ElasticNetwork
from nar_search.models.inherit import inherit_weights
from nar_search.models.reduce import NARCoefficients, input_reduce, nar_reduce
from nar_search.models.registry import original_spec
from nar_search.search.interrupts import Interrupted
from nar_search.search.methods.feasible import FeasibleCoefficients
from nar_search.search.methods.settings import Range


def elastic(name: str, side: int) -> ElasticNetwork:
    spec = original_spec(name, side)
    torch.manual_seed(0)
    return ElasticNetwork(spec, spec.build()).eval()


def test_the_base_spec_is_the_base_exactly():
    network = elastic("resnet18", 40)
    inputs = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(network(inputs, network.base_spec), network.base(inputs))
        assert torch.equal(network.extract(network.base_spec)(inputs), network.base(inputs))


def test_a_slice_is_what_inheriting_gives_and_trains_the_shared_weights():
    network = elastic("resnet18", 48)
    spec = nar_reduce(network.base_spec, 2)
    inputs = torch.randn(3, 3, spec.input_size, spec.input_size)
    inherited = spec.build().eval()
    inherit_weights(inherited, spec, network.base)
    with torch.no_grad():
        assert torch.allclose(network(inputs, spec), inherited(inputs), atol=1e-6)
        assert torch.allclose(network.extract(spec)(inputs), inherited(inputs), atol=1e-6)
    network.train()
    network(inputs, spec).sum().backward()
    stem = network.base.get_parameter("conv1.weight")
    kept = inherited.get_parameter("conv1.weight").shape[0]
    assert stem.grad is not None and stem.grad[:kept].abs().sum() > 0 and stem.grad[kept:].abs().sum() == 0


def test_a_slice_never_writes_its_batch_statistics_into_the_base():
    network = elastic("resnet18", 40).train()
    before = {name: buffer.clone() for name, buffer in network.base.named_buffers()}
    network(torch.randn(4, 3, 35, 35), nar_reduce(network.base_spec, 1))
    assert all(torch.equal(buffer, before[name]) for name, buffer in network.base.named_buffers())


def feasible_corners(name: str, side: int, minimum: int):
    """NAR's feasible α, β at the extremes of ϕ's range and of the fractions, and IR."""
    space = FeasibleCoefficients(Range(low=1.0, high=1.6), Range(low=1.0, high=1.3), minimum / side)
    for phi in (0.5, 3.0):
        for fractions in ((0.0, 0.0), (1.0, 1.0), (0.0, 1.0)):
            alpha, beta, gamma = space.draw(phi, *fractions)
            yield nar_reduce(original_spec(name, side), phi, NARCoefficients(alpha, beta, gamma, tolerance=0.05))
    yield input_reduce(original_spec(name, side), 2)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "side", "minimum"), [("resnetv2_50", 64, 32), ("inception_v4", 100, 75)])
def test_every_slice_the_space_allows_runs_at_its_side(name, side, minimum):
    network = elastic(name, side)
    for spec in feasible_corners(name, side, minimum):
        with torch.no_grad():
            outputs = network(torch.randn(2, 3, spec.input_size, spec.input_size), spec)
        assert outputs.shape == (2, 2) and torch.isfinite(outputs).all(), spec.reduction


def test_recalibrated_norms_hold_the_batches_statistics():
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    batches = [torch.randn(8, 3, 5, 5) * 3 + 1 for _ in range(3)]
    recalibrate_norms(network, batches)
    with torch.no_grad():
        features = torch.cat([network[0](batch) for batch in batches])
    assert torch.allclose(network[1].running_mean, features.mean(dim=(0, 2, 3)), atol=1e-5)
    assert not network.training and network[1].momentum == 0.1


@pytest.mark.slow
def test_sandwich_training_trains_the_shared_weights_and_slices_are_judged_untrained(patches, tmp_path):
    import random

    import lightning.pytorch as pl

    from nar_search.lightning_modules.datamodule import PatchDataModule

    network = elastic("resnet18", 48).train()
    teacher = network.extract(network.base_spec).eval()
    before = network.base.get_parameter("conv1.weight").detach().clone()
    smallest = nar_reduce(network.base_spec, 2)
    drawn = []

    def draw(rng: random.Random):
        drawn.append(nar_reduce(network.base_spec, rng.choice([0.5, 1.0, 1.5])))
        return drawn[-1]

    module = SandwichTraining(network, teacher, smallest, draw, sampled=2)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=PatchDataModule(str(patches), input_size=48, batch_size=16))
    assert trainer.global_step > 0 and len(drawn) == 2 * trainer.global_step  # two drawn networks a step
    assert not torch.equal(network.base.get_parameter("conv1.weight"), before)
    assert {"train_loss", "val_auc", "val_auc_smallest"} <= trainer.callback_metrics.keys()
    at_side = PatchDataModule(str(patches), input_size=smallest.input_size, batch_size=16)
    at_side.setup()
    assert 0.0 <= sliced_val_auc(network, smallest, at_side, calibration_patches=32) <= 1.0


class StoppedAtEpoch(SandwichTraining):
    """A sandwich training that a SIGTERM stops as its `stop_at`-th epoch starts."""

    stop_at = 1

    def on_train_epoch_start(self) -> None:
        if self.current_epoch == self.stop_at:
            raise Interrupted(signal.SIGTERM)
        super().on_train_epoch_start()


class Counted(SandwichTraining):
    """A sandwich training that counts the steps this process trains."""

    steps = 0

    def training_step(self, batch, batch_idx) -> None:
        self.steps += 1
        super().training_step(batch, batch_idx)


@pytest.mark.slow
def test_a_stopped_elastic_training_goes_on_from_its_last_epoch(patches, tmp_path):
    from nar_search.lightning_modules.datamodule import PatchDataModule

    pool = [nar_reduce(original_spec("resnet18", 48), phi) for phi in (0.5, 1.0)]

    def sandwich(module_type):
        network = elastic("resnet18", 48)
        return module_type(network, network.extract(network.base_spec), pool[-1], lambda rng: rng.choice(pool))

    data = PatchDataModule(str(patches), input_size=48, batch_size=16)
    stopped = sandwich(StoppedAtEpoch)
    with pytest.raises(Interrupted):
        train_elastic(stopped, data, 2, tmp_path, accelerator="cpu")
    one_epoch = stopped.compute
    resumed = sandwich(Counted)
    train_elastic(resumed, PatchDataModule(str(patches), input_size=48, batch_size=16), 2, tmp_path, accelerator="cpu")
    # only the second epoch was trained here; the first one's compute came back with its weights
    assert resumed.trainer.current_epoch == 2 and resumed.steps == resumed.trainer.num_training_batches
    assert 1.5 * one_epoch < resumed.compute < 2.5 * one_epoch
    assert not torch.equal(resumed.elastic.base.get_parameter("conv1.weight"), stopped.elastic.base.get_parameter("conv1.weight"))
