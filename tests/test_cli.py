"""The command line as a user meets it: output formats, --help, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def rhosearch(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, cwd=cwd,
    )


def assert_clean_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_count_all_json_lists_the_six_paper_configurations():
    result = rhosearch("count", "--preset", "all", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["classifier_channels"] for r in rows] == [640, 576, 640, 704, 864, 928]
    assert rows[0]["params"] == 5_578_632 and rows[0]["overhead_params"] == 0
    assert all(r["gmacs"] > 2.0 for r in rows)  # MobileViT-S at 256: ~2.03 GMACs with attention
    assert "scaled_dot_product_attention" in result.stderr


def test_count_rho_csv():
    result = rhosearch("count", "--rho", "4/3,5/4,4", "--format", "csv", "--method", "closed-form")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith("ExMViT-928,mobilevit_s,\"0,0,4/3,5/4,4\"")


def test_help_lists_commands():
    result = rhosearch("--help")
    assert result.returncode == 0 and "count" in result.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["count", "--rho=-1,1,1"], "negative"),
        (["count", "--rho", "x,1,1"], "not a number"),
        (["count", "--rho", "0,0,0"], "0 classifier channels"),
        (["count", "--rho", "1,1"], "give 3"),
        (["count", "--preset", "nope"], "exmvit-928"),
        (["count", "--rho", "1,1,1", "--backbone", "vit"], "mobilevit_xxs"),
        (["count", "--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, fragment):
    assert_clean_error(rhosearch(*args), fragment)
