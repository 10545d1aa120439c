"""rhosearch as an installed package: the wheel built from pyproject.toml carries its search
spaces and recipes, installs no top-level `cli` module, and works from another directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    dist, site, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    # No build isolation: the venv's setuptools builds it, so no index is needed.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(dist), str(ROOT)],
                   check=True, capture_output=True, cwd=tmp_path)
    [wheel] = dist.glob("rhosearch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "rhosearch/search_spaces/paper_table5.yaml" in names
    assert "rhosearch/search_spaces/exmobilevit_s.yaml" in names
    assert "rhosearch/training/recipes.yaml" in names
    assert not [n for n in names if n in ("cli.py",) or n.startswith("search_spaces/")]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "rhosearch = rhosearch.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, cwd=tmp_path)
    # The wheel's copy first on the path, run from a folder that is not the checkout.
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run(
        [sys.executable, "-c",
         "import rhosearch, rhosearch.core.model, timm; "
         "m = timm.create_model('exmobilevit_s_928'); "
         "print(rhosearch.__file__); print(m.num_features)"],
        capture_output=True, text=True, cwd=elsewhere, env=env, check=True)
    module_file, features = probe.stdout.split()
    assert module_file.startswith(str(site)) and features == "928"
    count = subprocess.run([str(site / "bin" / "rhosearch"), "count", "--preset", "all",
                            "--method", "closed-form", "--format", "csv"],
                           capture_output=True, text=True, cwd=elsewhere, env=env)
    assert count.returncode == 0, count.stderr
    assert "ExMViT-928" in count.stdout and "5899976" in count.stdout.replace(",", "")
