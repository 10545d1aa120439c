"""The head stage: cached maps give the model's logits, frozen trunks, paired image order,
batched heads train as looped ones, resume after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import head_recipe, head_space, random_loader

from rhosearch.core.model import ExMobileViT
from rhosearch.core.space import RhoConfig
from rhosearch.errors import RhoSearchError
from rhosearch.stages.head import (
    BlockMaps,
    Head,
    HeadBank,
    cache_block_maps,
    check_trunk,
    fit_heads,
    head_top1,
    image_order,
    read_runs,
    tapped_blocks,
    train_heads,
    train_heads_on_trunk,
)

SPACE = head_space()
RECIPE = head_recipe()
_loader = random_loader


def _trunk(randomize_bn) -> ExMobileViT:
    torch.manual_seed(0)
    return randomize_bn(ExMobileViT(RhoConfig("mobilevit_xxs", (0, 0, 0, 0, 4)),
                                    num_classes=10))


@pytest.mark.parametrize("rho", ["0,0,1,1/2,4", "0,0,1/3,0,2"])
def test_cached_map_head_equals_full_model(rho, randomize_bn):
    torch.manual_seed(3)
    model = randomize_bn(ExMobileViT(RhoConfig.parse(rho, backbone="mobilevit_xxs"),
                                     num_classes=10)).eval()
    loader = _loader(batch_size=24)  # one batch: a conv's sums depend on the batch's size
    maps = cache_block_maps(model, loader, tapped_blocks(SPACE))
    head = Head.from_model(model, maps.blocks).eval()
    with torch.no_grad():
        expected = model(next(iter(loader))[0])
        assert torch.equal(head(maps.maps), expected)
        bank = HeadBank([head]).eval()
        torch.testing.assert_close(bank(maps.maps)[0], expected, rtol=1e-5, atol=1e-6)


def test_trunk_is_frozen_and_keeps_its_mode(randomize_bn):
    trunk = _trunk(randomize_bn).train()
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    maps = cache_block_maps(trunk, _loader(), (2, 3, 4))
    for _ in train_heads(list(SPACE.configs()), maps, maps, recipe=RECIPE, seed=0,
                         num_classes=10):
        pass
    assert trunk.training
    assert all(torch.equal(v, before[k]) for k, v in trunk.state_dict().items())
    assert [m.shape[1] for m in maps.maps] == [48, 64, 80]  # blocks 3-5 of MobileViT-XXS


def test_configurations_see_the_same_images_in_the_same_order(randomize_bn):
    maps = cache_block_maps(_trunk(randomize_bn), _loader(), (2, 3, 4))
    seen: dict[str, list[list[int]]] = {}
    for rho in ("0,0,1,1/2,4", "0,0,0,0,2"):
        head = Head(RhoConfig.parse(rho, backbone="mobilevit_xxs"), maps.blocks, num_classes=10)
        seen[rho] = []
        fit_heads(head, maps, RECIPE, head_seed=5,
                  on_batch=lambda b, rho=rho: seen[rho].append(b.tolist()))
    assert seen["0,0,1,1/2,4"] == seen["0,0,0,0,2"]
    assert seen["0,0,0,0,2"] == [b.tolist() for e in image_order(24, RECIPE, 5) for b in e]
    assert seen["0,0,0,0,2"] != [b.tolist() for e in image_order(24, RECIPE, 6) for b in e]


def test_bank_matches_looped_heads(randomize_bn):
    """One bank of all heads trains each head as it trains alone (no dropout: its masks are
    the one thing a pass draws differently)."""
    maps = cache_block_maps(_trunk(randomize_bn), _loader(), (2, 3, 4))
    configs = list(SPACE.configs())[::3]
    looped = [t for _, top1 in train_heads(configs, maps, maps, recipe=RECIPE, seed=1,
                                           num_classes=10, batched=False) for t in top1]
    banked = [t for _, top1 in train_heads(configs, maps, maps, recipe=RECIPE, seed=1,
                                           num_classes=10, heads_per_pass=3) for t in top1]
    assert banked == pytest.approx(looped, abs=1e-9)
    head = Head(configs[0], maps.blocks, num_classes=10)
    assert head_top1(HeadBank([head]), maps) == pytest.approx(head_top1(head, maps))


def test_space_tapping_no_block_of_the_trunk_is_refused(randomize_bn):
    trunk = _trunk(randomize_bn)
    other = RhoConfig.parse("1,1,4", backbone="mobilevit_s")
    with pytest.raises(RhoSearchError, match="does not produce"):
        check_trunk(trunk, [other])
    shallow = ExMobileViT(RhoConfig.parse("0,0,1,0,0", backbone="mobilevit_xxs"))
    with pytest.raises(RhoSearchError, match="blocks 1-3"):
        check_trunk(shallow, [RhoConfig.parse("0,0,1,1/2,4", backbone="mobilevit_xxs")])


_RESUME = """
import sys, torch
from pathlib import Path
sys.path.insert(0, {tests!r})
from helpers import head_recipe, head_space, random_loader
from rhosearch.core.model import ExMobileViT
from rhosearch.core.space import RhoConfig
from rhosearch.stages.head import train_heads_on_trunk
SPACE, RECIPE, _loader = head_space(), head_recipe(), random_loader
torch.manual_seed(0)
trunk = ExMobileViT(RhoConfig("mobilevit_xxs", (0, 0, 0, 0, 4)), num_classes=10)
new = train_heads_on_trunk(0, trunk, list(SPACE.configs()), train=_loader(), val=_loader(),
                           recipe=RECIPE, head_seeds=[0, 1], runs_path=Path(sys.argv[1]),
                           heads_per_pass=2, log=print)
print("trained", len(new), flush=True)
"""


def test_resume_after_kill_does_not_retrain_finished_heads(tmp_path):
    runs = tmp_path / "runs.jsonl"
    script = tmp_path / "stage.py"
    script.write_text(_RESUME.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, str(script), str(runs)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and len(read_runs(runs)) < 4:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    finished = read_runs(runs)
    total = 2 * len(list(SPACE.configs()))
    assert 4 <= len(finished) < total
    out = subprocess.run([sys.executable, str(script), str(runs)], env=env, check=True,
                         capture_output=True, text=True).stdout
    assert f"trained {total - len(finished)}" in out
    after = read_runs(runs)
    assert len(after) == total == len({r.key for r in after})
    assert after[: len(finished)] == finished
    again = subprocess.run([sys.executable, str(script), str(runs)], env=env, check=True,
                           capture_output=True, text=True).stdout
    assert "trained 0" in again


def test_cut_line_is_skipped(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text('{"trunk": 0, "head_seed": 0, "rho": "0,0,0,0,4", "top1": 50.0, '
                    '"n_val": 10}\n{"trunk": 0, "head_')
    assert [r.rho for r in read_runs(path)] == ["0,0,0,0,4"]
    assert isinstance(BlockMaps((2,), (torch.zeros(1, 2, 1, 1),), torch.zeros(1)).
                      bytes_per_image(), int)
    assert train_heads_on_trunk is not None
