import itertools
import json
import subprocess
import sys

import pytest
from conftest import run_cli

PAPER_TABLE = [
    ((3, 4, 6, 3), (64, 128, 256, 512), 64, 240),
    ((2, 3, 5, 2), (58, 116, 233, 465), 58, 209),
    ((2, 3, 4, 2), (53, 106, 212, 423), 53, 181),
    ((2, 2, 3, 2), (48, 96, 192, 385), 48, 158),
    ((1, 2, 3, 1), (44, 87, 175, 350), 44, 137),
    ((1, 2, 2, 1), (40, 79, 159, 318), 40, 119),
]


@pytest.mark.slow
def test_reduce_json_reproduces_the_papers_resnet_sweep(capsys):
    assert run_cli("reduce", "--model", "resnetv2_50", "--input-size", "240", "--phi", "0:5", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["phi"] for row in rows] == [0, 1, 2, 3, 4, 5]
    for row, (depths, mids, stem, side) in zip(rows, PAPER_TABLE):
        spec = row["spec"]
        assert (tuple(spec["depths"]), tuple(spec["mid_widths"]), spec["stem_width"], spec["input_size"]) == (depths, mids, stem, side)
    assert rows[0]["gflops"] == pytest.approx(9.61, rel=0.02)
    assert rows[0]["gflops"] / rows[2]["gflops"] == pytest.approx(3.26, rel=0.02)
    assert all(a["gflops"] > b["gflops"] for a, b in itertools.pairwise(rows))


@pytest.mark.slow
def test_reduce_prints_a_table_per_stage(capsys):
    assert run_cli("reduce", "--model", "inception_v4", "--phi", "0,2") == 0
    out = capsys.readouterr().out
    assert "Inception-A" in out and "GFLOPs" in out and "fewer GFLOPs" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--alpha", "2", "--beta", "1.5", "--gamma", "1.5"], "α·β²·γ² = 10.125"),
        (["--alpha", "0.9"], "must be ≥ 1"),
        (["--phi", "-1"], "≥ 0"),
        (["--model", "resnet_nonexistent"], "unknown model"),
        (["--input-size", "64", "--phi", "6"], "below"),
        (["--phi", "a:b"], "not a ϕ value"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, args, message):
    assert run_cli("reduce", *args) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


@pytest.mark.slow
def test_bad_input_in_a_real_process_shows_no_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "nar_search.search.cli", "reduce", "--model", "resnet_nonexistent"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "unknown model" in result.stderr
