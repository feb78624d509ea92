import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nar_search.lightning_modules.resrep as resrep_callback
from nar_search.lightning_modules.classifier import PatchClassifier
from nar_search.lightning_modules.resrep import ResRepCallback, converted_classifier
from nar_search.models.cost import count_gflops, spec_cost
from nar_search.models.registry import original_spec
from nar_search.models.resrep import (
    ResRepSpec,
    WidthCost,
    compactable_convs,
    compactors,
    convert,
    insert_compactors,
    masked_widths,
    param_groups,
    reset_gradients,
    update_masks,
)
from nar_search.models.spec import spec_from_json


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The test machines' few cores are shared: one thread each is several times faster here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyNet(nn.Module):
    """Branches into a concatenation, a residual sum and a dense head; one branch has a plain
    BatchNorm, a separate ReLU and a conv bias, the others timm's BatchNormAct2d."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvNormAct(3, 8, 3, stride=2)
        self.left = nn.Sequential(nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.right = nn.Sequential(ConvNormAct(8, 4, 1), ConvNormAct(4, 6, 3))
        self.proj = nn.Sequential(nn.Conv2d(12, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.skip = nn.Conv2d(12, 8, 1)
        self.head = nn.Linear(8, 2)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.max_pool2d(torch.cat([self.left(x), self.right(x)], 1), 2)
        x = torch.relu(self.proj(x) + self.skip(x))
        return self.head(x.mean((2, 3)))


TINY_SIDE = 32


def batch(side: int, size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(size, 3, side, side), torch.arange(size) % 2


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, lr: float = 0.05) -> None:
    model.train()
    optimizer = torch.optim.SGD(param_groups(model, weight_decay=1e-4), lr=lr, momentum=0.9)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        reset_gradients(model, lasso_strength=1e-2)
        optimizer.step()


def forget_masked_rows(model: nn.Module) -> None:
    """What long training does to masked rows: the Lasso shrinks them below the 1e-5 threshold."""
    with torch.no_grad():
        for compactor in compactors(model):
            rows = compactor.weight[compactor.mask == 0]
            compactor.weight[compactor.mask == 0] = 1e-7 * rows / rows.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def calibrate(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Norm statistics of `images`, so that eval outputs of an untrained deep net stay finite."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    with torch.no_grad():
        model.train()(images)
    return model.eval()


def masked_count(model: nn.Module) -> int:
    return sum(int((c.mask == 0).sum()) for c in compactors(model))


def test_prunable_convs_are_those_not_tied_to_residual_sums_nor_the_classifier():
    assert set(compactable_convs(TinyNet(), TINY_SIDE)) == {"stem.conv", "left.0", "right.0.conv", "right.1.conv"}


def test_compactors_start_as_the_identity():
    model, (images, _) = TinyNet().eval(), batch(TINY_SIDE)
    expected = model(images)
    inserted = insert_compactors(model, TINY_SIDE)
    assert len(inserted) == 4 and all(c.mask.all() for c in inserted)
    torch.testing.assert_close(model(images), expected, rtol=0, atol=0)


def test_gradient_rule_leaves_masked_rows_to_the_lasso():
    torch.manual_seed(0)
    model, (images, labels) = TinyNet(), batch(TINY_SIDE)
    insert_compactors(model, TINY_SIDE)
    compactor = compactors(model)[0]
    with torch.no_grad():
        compactor.weight.add_(0.1 * torch.randn_like(compactor.weight))
        compactor.weight[5] = 0  # an unmasked zero row: no Lasso direction, no division by zero
    compactor.mask[:3] = 0
    F.cross_entropy(model(images), labels).backward()
    task = compactor.weight.grad.clone().flatten(1)
    reset_gradients(model, lasso_strength=0.5)
    rows, grad = compactor.weight.detach().flatten(1), compactor.weight.grad.flatten(1)
    lasso = 0.5 * rows / rows.norm(dim=1, keepdim=True)
    torch.testing.assert_close(grad[:3], lasso[:3])
    torch.testing.assert_close(grad[3:5], task[3:5] + lasso[3:5])
    torch.testing.assert_close(grad[5], task[5])
    torch.testing.assert_close(grad[6:], task[6:] + lasso[6:])


def test_mask_schedule_adds_at_most_max_new_and_stops_at_the_flops_target():
    torch.manual_seed(0)
    model = TinyNet()
    insert_compactors(model, TINY_SIDE)
    with torch.no_grad():
        for compactor in compactors(model):
            compactor.weight.add_(0.1 * torch.randn_like(compactor.weight))
    cost = WidthCost.of(model, TINY_SIDE)
    assert cost.original == pytest.approx(count_gflops(TinyNet(), TINY_SIDE))

    update_masks(model, 0.5, max_new=3, cost=cost)
    assert masked_count(model) == 3
    update_masks(model, 0.5, max_new=3, cost=cost)
    assert masked_count(model) == 6

    fraction = update_masks(model, 0.5, max_new=10**6, cost=cost)
    widths = masked_widths(model)
    assert fraction == pytest.approx(cost(widths) / cost.original) and fraction <= 0.5
    # One channel fewer masked would still be above the target: the schedule stops right there.
    masked = [(float(c.row_norms()[row]), c.conv_name) for c in compactors(model) for row in (c.mask == 0).nonzero().flatten()]
    _, last = max(masked)
    assert cost({**widths, last: widths[last] + 1}) > 0.5 * cost.original

    update_masks(model, 0.0, max_new=10**6, cost=cost)
    assert set(masked_widths(model).values()) == {1}


def test_conversion_is_exact_and_cheaper():
    torch.manual_seed(0)
    model, (images, labels) = TinyNet(), batch(TINY_SIDE)
    insert_compactors(model, TINY_SIDE)
    cost = WidthCost.of(model, TINY_SIDE)
    train(model, images, labels, steps=3)
    update_masks(model, 0.5, max_new=10**6, cost=cost)
    train(model, images, labels, steps=3)
    forget_masked_rows(model)
    expected = calibrate(model, images)(images)

    converted, widths = convert(model, TINY_SIDE)
    assert not compactors(converted) and widths == masked_widths(model)
    assert converted.left[0].out_channels == widths["left.0"] and converted.head.out_features == 2
    torch.testing.assert_close(converted.eval()(images), expected, rtol=0, atol=1e-4)
    gflops = count_gflops(converted, TINY_SIDE)
    assert gflops == pytest.approx(cost(widths)) and gflops <= 0.5 * count_gflops(TinyNet(), TINY_SIDE)


def test_compactors_are_spared_weight_decay():
    model = TinyNet()
    insert_compactors(model, TINY_SIDE)
    decayed, spared = param_groups(model, weight_decay=5e-4)
    assert {id(p) for p in spared["params"]} == {id(c.weight) for c in compactors(model)}
    assert spared["weight_decay"] == 0 and decayed["weight_decay"] == 5e-4
    assert len(decayed["params"]) + len(spared["params"]) == len(list(model.parameters()))


def resnetv2_bottleneck_convs(model: nn.Module) -> set[str]:
    return {
        f"stages.{s}.blocks.{b}.{conv}"
        for s, stage in enumerate(model.stages)
        for b in range(len(stage.blocks))
        for conv in ("conv1", "conv2")
    }


@pytest.mark.slow
@pytest.mark.parametrize(("model_name", "side", "classifier"), [("resnetv2_50", 32, "head.fc"), ("inception_v4", 75, "last_linear")])
def test_resrep_on_the_papers_networks(model_name, side, classifier):
    torch.manual_seed(0)
    spec = original_spec(model_name, side)
    # Four images, not two: at Inception's 1×1 maps two images give norms near-zero variances,
    # and folding such norms turns float rounding into differences of 1e-4 (measured 2.7e-4).
    model, (images, labels) = spec.build(), batch(side, size=4)
    original_gflops = count_gflops(model, side)
    compacted = {c.conv_name for c in insert_compactors(model, side)}
    assert classifier not in compacted
    if model_name == "resnetv2_50":
        assert compacted == resnetv2_bottleneck_convs(model)

    cost = WidthCost.of(model, side)
    train(model, images, labels, steps=2, lr=0.01)
    update_masks(model, 0.5, max_new=10**6, cost=cost)
    train(model, images, labels, steps=1, lr=0.01)
    forget_masked_rows(model)
    expected = calibrate(model, images)(images)

    converted, widths = convert(model, side)
    torch.testing.assert_close(converted.eval()(images), expected, rtol=0, atol=1e-4)
    gflops = count_gflops(converted, side)
    assert gflops == pytest.approx(cost(widths)) and gflops <= 0.5 * original_gflops
    assert converted.get_submodule(classifier).weight.shape[0] == 2

    resrep = ResRepSpec.of(spec, widths, flops_target=0.5)
    again = spec_from_json(resrep.to_json())
    assert again == resrep and again.reduction.method == "resrep"
    again.build().load_state_dict(converted.state_dict())
    assert spec_cost(again).gflops == pytest.approx(gflops)


@pytest.mark.slow
def test_callback_trains_masks_and_converts_a_patch_classifier(monkeypatch):
    torch.manual_seed(0)
    resets = []

    def counted_reset(model: nn.Module, lasso_strength: float) -> None:
        resets.append(lasso_strength)
        reset_gradients(model, lasso_strength)

    monkeypatch.setattr(resrep_callback, "reset_gradients", counted_reset)
    classifier = PatchClassifier(original_spec("resnetv2_50", 32).to_dict())
    images, labels = batch(32, size=8)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=4,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ResRepCallback(flops_target=0.5, mask_interval=1, warmup_epochs=1, max_new=2)],
    )
    trainer.fit(classifier, DataLoader(TensorDataset(images, labels), batch_size=4))
    assert masked_count(classifier.model) == 4  # two updates in the second epoch, two channels each
    assert resets == [1e-4] * 4  # the gradient rule at every optimiser step

    thinner = converted_classifier(classifier, flops_target=0.5, drop_masked=False)
    assert isinstance(thinner.spec, ResRepSpec) and not compactors(thinner.model)
    classifier.eval(), thinner.eval()
    torch.testing.assert_close(thinner(images[:4]), classifier(images[:4]), rtol=0, atol=1e-4)

    # After a short budget the masked rows have not decayed; dropping them removes exactly them.
    pruned = converted_classifier(classifier, flops_target=0.5)
    kept = dict(pruned.spec.widths)
    full = dict(thinner.spec.widths)
    assert sum(full.values()) - sum(kept.values()) == masked_count(classifier.model)
