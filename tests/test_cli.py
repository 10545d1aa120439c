"""The command line as a user meets it: output formats, --help, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def rhosearch(*args: str) -> subprocess.CompletedProcess:
    """Runs the command line in this process (an interpreter start costs seconds here); only
    what needs a fresh process (imports at --help, the terminal's width) starts one."""
    import contextlib
    import io

    from rhosearch.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse: --help and unknown flags
            code = exit_.code or 0
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


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


def test_a_found_rho_is_named_by_rho_and_width_in_the_csv():
    result = rhosearch("count", "--rho", "2,1/2,2", "--format", "csv", "--method", "closed-form")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith('"ρ(0,0,2,½,2)·576",mobilevit_s,')


def test_help_never_imports_torch_or_ray():
    # --help must stay well under a second: the heavy imports live inside the commands.
    code = ("import sys; from rhosearch.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'ray', 'timm', 'optuna') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


def test_every_option_has_help_and_train_lists_every_recipe():
    import yaml

    from rhosearch.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them only here
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings} has no help text"
    recipes = yaml.safe_load((ROOT / "rhosearch" / "training" / "recipes.yaml").read_text())
    train_help = commands["train"].format_help()
    assert all(recipe in train_help for recipe in recipes)  # full_small, proxy_fmnist, ...


def test_count_table_cuts_no_header_or_cell():
    import os

    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "count", "--preset", "all",
                             "--method", "closed-form"], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    assert "classifier_channels" in result.stdout and "0,0,128,160,640" in result.stdout


def test_csv_writes_counts_as_integers(tmp_path):
    import pandas as pd

    from rhosearch.output import write_csv

    frame = pd.DataFrame({"number": [0, 1], "params": [5_578_632, None], "top1": [90.0, None],
                          "classifier_channels": [640.0, 576.0]})
    write_csv(frame, tmp_path / "t.csv")
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[1:] == ["0,5578632,90.0,640", "1,,,576"]  # top-1 stays a measurement


def test_sizes_read_as_du_si_prints_them():
    from rhosearch.output import human_size

    assert [human_size(n) for n in (999, 48_200_000, 1_100_000_000)] == [
        "999 bytes", "48.2 MB", "1.1 GB"]


def test_percentages_are_rounded_for_people_in_csv_and_json(capsys):
    import pandas as pd

    from rhosearch.output import print_frame

    frame = pd.DataFrame({"top5": [100.00000762939453], "overhead_pct": [1.23456789],
                          "gmacs": [1.23456789]})
    print_frame(frame, fmt="csv")
    assert capsys.readouterr().out.splitlines()[1] == "100.0,1.2346,1.23456789"
    print_frame(frame, fmt="json")
    assert json.loads(capsys.readouterr().out)[0]["top5"] == 100.0


def test_help_texts_say_what_the_commands_do():
    from rhosearch.cli import build_parser

    parser = build_parser()
    search = parser._subparsers._group_actions[0].choices["search"].format_help()
    assert "fashion-mnist" in search and "starts from its front" not in search
    assert "train the supernet and score the whole space" in " ".join(search.split())


def test_the_count_footer_names_the_papers_total_parameters():
    result = rhosearch("count", "--preset", "baseline", "--method", "closed-form")
    assert result.returncode == 0, result.stderr
    printed = " ".join((result.stdout + result.stderr).split())
    assert "the paper's total parameters" in printed and "overhead parameters" not in printed
