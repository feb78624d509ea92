import math

import pytest

from nar_search.models.errors import ModelError
from nar_search.models.reduce import NARCoefficients, input_reduce, nar_reduce
from nar_search.models.resnetv2 import ResNetV2Spec
from nar_search.models.rounding import scale_depth, scale_side, scale_width


def resnet(side: int = 240) -> ResNetV2Spec:
    return ResNetV2Spec(model_name="resnetv2_50", input_size=side)


@pytest.mark.parametrize(
    ("blocks", "factor", "expected"),
    [(3, 1 / 1.2, 2), (5, 0.5, 2), (7, 0.5, 4), (1, 0.01, 1), (6, 1.0, 6)],
)
def test_paper_depth_rounds_half_to_even_with_a_floor_of_one(blocks, factor, expected):
    assert scale_depth(blocks, factor, "paper") == expected


def test_paper_width_rounds_half_to_even():
    assert scale_width(5, 0.5, "paper") == 2
    assert scale_width(7, 0.5, "paper") == 4
    assert scale_width(256, 1 / 1.1, "paper") == 233


def test_divisible8_rounds_widths_to_multiples_of_8_and_depth_up():
    assert scale_width(256, 1 / 1.1, "divisible8") == 232
    assert scale_width(64, 1 / 1.21, "divisible8") % 8 == 0
    assert scale_depth(3, 1 / 1.2, "divisible8") == 3
    assert scale_depth(4, 0.5, "divisible8") == 2  # exact products are not bumped up


def test_input_side_floor():
    assert scale_side(240, 1 / 1.15) == 209
    assert scale_side(1, 0.1) == 1


# nar-method.md, ResNet50 V2 at base input 240.
PAPER_TABLE = {
    0: ((3, 4, 6, 3), (64, 128, 256, 512), 64, 240),
    1: ((2, 3, 5, 2), (58, 116, 233, 465), 58, 209),
    2: ((2, 3, 4, 2), (53, 106, 212, 423), 53, 181),
    3: ((2, 2, 3, 2), (48, 96, 192, 385), 48, 158),
    4: ((1, 2, 3, 1), (44, 87, 175, 350), 44, 137),
    5: ((1, 2, 2, 1), (40, 79, 159, 318), 40, 119),
}


@pytest.mark.parametrize("phi", sorted(PAPER_TABLE))
def test_nar_reproduces_the_papers_resnet_table(phi):
    depths, mids, stem, side = PAPER_TABLE[phi]
    spec = nar_reduce(resnet(), phi)
    assert (spec.depths, spec.mid_widths, spec.stem_width, spec.input_size) == (depths, mids, stem, side)
    assert spec.out_widths == tuple(4 * m for m in mids)  # 4 × 233 = 932, not 931
    assert spec.reduction.method == "nar" and spec.reduction.phi == phi and spec.reduction.rounding == "paper"


def test_fractional_phi_is_allowed():
    spec = nar_reduce(resnet(), 1.5)
    assert spec.input_size == round(240 * 1.15**-1.5)


def test_ir_changes_only_the_input_side():
    spec = input_reduce(resnet(), 5)
    assert spec.input_size == 119  # the paper's IR baseline
    assert (spec.depths, spec.mid_widths, spec.stem_width) == ((3, 4, 6, 3), (64, 128, 256, 512), 64)
    assert spec.reduction.method == "ir"


def test_coefficients_admit_the_papers_values_and_report_their_product():
    coefficients = NARCoefficients()
    assert math.isclose(coefficients.cost_base, 1.2 * 1.1**2 * 1.15**2)
    d, w, r = coefficients.factors(2)
    assert math.isclose(d, 1.2**-2) and math.isclose(w, 1.1**-2) and math.isclose(r, 1.15**-2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(alpha=2.0, beta=1.5, gamma=1.5), "not within"),
        (dict(alpha=0.9, beta=1.2, gamma=1.2), "must be ≥ 1"),
    ],
)
def test_bad_coefficients_are_refused(kwargs, message):
    with pytest.raises(ModelError, match=message):
        NARCoefficients(**kwargs)


def test_negative_phi_and_collapsed_input_are_refused():
    with pytest.raises(ModelError, match="≥ 0"):
        nar_reduce(resnet(), -1)
    with pytest.raises(ModelError, match="below"):
        nar_reduce(resnet(), 20)


def test_a_reduced_spec_is_not_reduced_again():
    with pytest.raises(ModelError, match="already reduced"):
        nar_reduce(nar_reduce(resnet(), 1), 1)
