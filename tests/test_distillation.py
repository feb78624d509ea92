"""Knowledge distillation from the base network: the loss, and the teacher's cached targets."""

import math

import pytest
import torch
import torch.nn.functional as F

from nar_search.data.synth_patches import write_patches
from nar_search.lightning_modules.datamodule import PatchDataModule
from nar_search.lightning_modules.distill_settings import DistillSettings
from nar_search.lightning_modules.distillation import TeacherTargets, distillation_loss
from nar_search.lightning_modules.errors import TrainingError
from nar_search.lightning_modules.training import TrainingConfig, train_spec
from nar_search.models.base_network import BaseNetwork
from nar_search.models.reduce import nar_reduce
from nar_search.models.registry import original_spec


def test_weight_zero_is_plain_cross_entropy():
    student, teacher = torch.randn(8, 2), torch.randn(8, 2)
    labels = torch.randint(0, 2, (8,))
    assert torch.equal(distillation_loss(student, teacher, labels, 0.0, 4.0), F.cross_entropy(student, labels))


def test_soft_term_is_t_squared_kl_of_softened_distributions():
    student, teacher = torch.tensor([[2.0, -1.0]]), torch.tensor([[0.5, 1.5]])
    labels = torch.tensor([0])
    for temperature in (1.0, 2.0, 4.0):
        p = torch.softmax(teacher / temperature, 1)[0]
        q = torch.softmax(student / temperature, 1)[0]
        kl = sum(float(p[i] * math.log(p[i] / q[i])) for i in range(2))
        loss = distillation_loss(student, teacher, labels, 1.0, temperature)
        assert loss.item() == pytest.approx(temperature**2 * kl, rel=1e-5)
    # T² keeps the soft term's scale: at high T it tends to Hinton's logit matching,
    # (Δstudent − Δteacher)² / 8 for two classes, here (3 − (−1))² / 8 = 2.
    assert distillation_loss(student, teacher, labels, 1.0, 50.0).item() == pytest.approx(2.0, rel=1e-3)


def test_mixed_loss_and_a_student_equal_to_its_teacher():
    logits, labels = torch.randn(6, 2), torch.randint(0, 2, (6,))
    assert distillation_loss(logits, logits, labels, 1.0, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    mixed = distillation_loss(logits, logits, labels, 0.25, 3.0)
    assert mixed.item() == pytest.approx(0.75 * F.cross_entropy(logits, labels).item(), rel=1e-5)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        DistillSettings(weight=1.5)


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    folder = tmp_path_factory.mktemp("patches")
    write_patches(folder, n=48, seed=3, slides=6)
    return folder


def test_teacher_targets_are_the_teachers_logits_at_its_own_side(patches):
    original = original_spec("resnet18", 40)
    teacher = original.build().eval()
    datamodule = PatchDataModule(str(patches), input_size=32, batch_size=8)
    datamodule.setup()
    logits = TeacherTargets(teacher, input_size=40)._logits(datamodule, torch.device("cpu"))
    assert logits.shape == (datamodule.num_train, 2)
    first_images, _ = next(iter(datamodule.train_patches_at(40, 4)))
    assert first_images.shape[-1] == 40
    with torch.inference_mode():
        assert torch.allclose(logits[:4], teacher(first_images), atol=1e-5)


def test_shuffled_training_batches_carry_each_patchs_own_targets(patches):
    # Teacher and student at one side and no augmentation: every shuffled image must come with
    # the teacher's logits of that very image.
    teacher = original_spec("resnet18", 40).build().eval()
    datamodule = PatchDataModule(str(patches), input_size=40, batch_size=8, augment=False)
    datamodule.setup()
    datamodule.soft_targets = TeacherTargets(teacher, input_size=40)._logits(datamodule, torch.device("cpu"))
    order = [labels for _, labels, _ in datamodule.train_dataloader()]
    assert torch.cat(order).tolist() != [datamodule.dataset.labels[i] for i in datamodule.splits["train"]]  # shuffled
    with torch.inference_mode():
        for images, _, targets in datamodule.train_dataloader():
            assert torch.allclose(teacher(images), targets, atol=1e-5)


@pytest.mark.slow
def test_a_distilled_student_learns_from_its_teacher_in_training_only(patches, tmp_path, monkeypatch):
    import nar_search.lightning_modules.classifier

    stages = []
    real_loss = nar_search.lightning_modules.classifier.distillation_loss

    def recording_loss(student, teacher, labels, weight, temperature):
        stages.append((weight, temperature, student.requires_grad))
        return real_loss(student, teacher, labels, weight, temperature)

    monkeypatch.setattr(nar_search.lightning_modules.classifier, "distillation_loss", recording_loss)
    original = original_spec("resnet18", 40)
    base = BaseNetwork(original, original.build().state_dict())
    spec = nar_reduce(original, 1)
    config = TrainingConfig(epochs=1, batch_size=8, patience=None, accelerator="cpu", init="inherit", distill=DistillSettings(0.5, 2.0))
    datamodule = PatchDataModule(str(patches), input_size=spec.input_size, batch_size=8)
    result = train_spec(spec, datamodule, config, tmp_path, base=base, progress=False)
    assert datamodule.soft_targets is not None and datamodule.soft_targets.shape == (datamodule.num_train, 2)
    assert result.runs[0].classifier.hparams.distill_weight == 0.5
    batches = len(datamodule.train_dataloader())
    assert stages == [(0.5, 2.0, True)] * batches  # every training step, and no validation or test step


def test_distillation_without_a_base_is_one_clear_error(patches, tmp_path):
    spec = nar_reduce(original_spec("resnet18", 40), 1)
    config = TrainingConfig(epochs=1, accelerator="cpu", distill=DistillSettings())
    with pytest.raises(TrainingError, match="needs a base network"):
        train_spec(spec, PatchDataModule(str(patches), input_size=spec.input_size), config, tmp_path, progress=False)
