"""Fixtures shared by the test modules."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import ray
import torch

from rhosearch.execution.resources import Budget, start_ray

ROOT = Path(__file__).resolve().parent.parent
# A small XXS space (18 rho vectors) for real searches in tests.
XXS_SPACE_YAML = """backbone: mobilevit_xxs
rho:
  rho_3: [0, 1/3, 1]
  rho_4: [0, 1/4, 1]
  rho_5: [3, 4]
"""


def _randomize_bn(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


@pytest.fixture
def randomize_bn() -> Callable[[torch.nn.Module], torch.nn.Module]:
    """Moves every BatchNorm's running statistics and affine parameters off their initial
    values (0, 1, 1, 0), in place, so a slicing or gathering mistake shows in the outputs."""
    return _randomize_bn


@pytest.fixture
def xxs_space_yaml(tmp_path: Path) -> Path:
    """`tmp_path/space.yaml`: the small XXS space."""
    path = tmp_path / "space.yaml"
    path.write_text(XXS_SPACE_YAML)
    return path


@pytest.fixture
def search_command(tmp_path: Path, xxs_space_yaml: Path) -> Callable[..., list[str]]:
    """Builds the command line of a real `rhosearch search` run as a subprocess: study "k" in
    `tmp_path`, the small XXS space, 1 epoch on a digits subset, 2 CPUs; `extra` appended."""
    def command(*extra: str, trials: int = 4) -> list[str]:
        return [sys.executable, str(ROOT / "cli.py"), "search", "--budget", "2cpus",
                "--trials", str(trials), "--study", "k", "--space", str(xxs_space_yaml),
                "--epochs", "1", "--set", "batch_size=32", "--reports-dir", str(tmp_path),
                "--resolve-seeds", "0", *extra]
    return command


@pytest.fixture
def shared_ray() -> Iterator[None]:
    """The local 2-CPU Ray that `rhosearch search --budget 2cpus` starts, kept up from one test
    that asks for it to the next (a start and a shutdown cost about 4 s on 2 cores). A search or
    `train-best` finds it running, uses it and leaves it up, as with any caller's Ray."""
    if not ray.is_initialized():
        start_ray(Budget(cpus=2))
    yield


@pytest.fixture(autouse=True)
def _no_shared_ray_unasked(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that does not ask for `shared_ray` starts with no Ray up: its search starts (and
    shuts down) its own, or the test starts one with other resources."""
    if "shared_ray" not in request.fixturenames and ray.is_initialized():
        ray.shutdown()
    yield


# The files holding the longest tests (real searches, Ray Train, a 2-node cluster, CLI
# processes), longest first: pytest-xdist hands whole files to its two workers in collection
# order, so none of them is left to start last and run alone.
SLOWEST_FILES = ("test_search.py", "test_finalists.py", "test_scale.py", "test_robust.py",
                 "test_lease.py", "test_export.py", "test_report.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a file


def pytest_sessionfinish(session: pytest.Session) -> None:
    if ray.is_initialized():
        ray.shutdown()
