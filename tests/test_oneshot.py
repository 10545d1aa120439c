"""The one-shot stage: width-independent BN, the sandwich step, batched scoring, tau, record."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import optuna
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from rhosearch.core.cost import CostModel
from rhosearch.core.model import RhoSupernet
from rhosearch.core.space import RhoConfig, parse_search_space
from rhosearch.errors import RhoSearchError
from rhosearch.record.study import pareto_front, record_scores, trials_frame
from rhosearch.stages.oneshot import (
    config_logits,
    largest_config,
    sandwich_step,
    score_features,
    score_space,
    score_supernet,
    smallest_config,
    train_supernet,
    widest_features,
)
from rhosearch.training.train import load_recipe

SPACE = parse_search_space({
    "backbone": "mobilevit_xxs",
    "rho": {"rho_2": [0, 1], "rho_3": [0, "1/3", 1], "rho_4": [0, "1/2"], "rho_5": [0, 2, 4]},
})
CONFIGS = ["0,1,1/3,0,0", "0,0,1,1/2,4", "0,0,0,0,2", "0,1,0,1/2,0", "0,1,1,1/2,4"]


@pytest.fixture
def make_supernet(randomize_bn) -> Callable[[], RhoSupernet]:
    """Builds the same supernet of SPACE at every call, its BN moved off its initial values."""
    def make() -> RhoSupernet:
        torch.manual_seed(0)
        return randomize_bn(RhoSupernet(SPACE, num_classes=10, drop_rate=0.0))
    return make


def _images(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 32, 32, generator=generator)
    return images, torch.randint(10, (n,), generator=generator)


def _config(text: str) -> RhoConfig:
    return RhoConfig.parse(text, backbone=SPACE.backbone)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_bn_channel_is_width_independent(training, make_supernet):
    supernet = make_supernet().train(training)
    images, _ = _images()
    with torch.no_grad():
        blocks = supernet.forward_blocks(images)
    for k, width in enumerate(supernet.widths):
        if not width:
            continue
        bn = supernet.shortcuts[k].bn
        before = bn.running_mean.clone(), bn.running_var.clone()
        outputs, stats = [], []
        for channels in sorted({1, max(1, width // 3), width}):
            bn.running_mean.copy_(before[0])
            bn.running_var.copy_(before[1])
            with torch.no_grad():
                outputs.append(supernet._sliced_shortcut(k, blocks[k], channels))
            stats.append((bn.running_mean.clone(), bn.running_var.clone()))
        for output, (mean, var) in zip(outputs, stats, strict=True):
            m = output.shape[1]
            torch.testing.assert_close(output, outputs[-1][:, :m], rtol=1e-5, atol=1e-6)
            # A channel's running statistics move the same way whatever the width beside it.
            torch.testing.assert_close(mean[:m], stats[-1][0][:m], rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(var[:m], stats[-1][1][:m], rtol=1e-6, atol=1e-7)


def _soft_targets_loss(logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    teacher = logits[0].detach().softmax(1)
    loss = torch.nn.functional.cross_entropy(logits[0], labels, label_smoothing=0.1)
    for other in logits[1:]:
        loss = loss - (teacher * other.log_softmax(1)).sum(1).mean()
    return loss


def test_shared_forward_matches_separate_forwards(make_supernet):
    """The 4x saving: one widest forward gives the gradients of four separate forwards."""
    images, labels = _images()
    configs = [largest_config(SPACE), _config("0,0,0,0,2"), _config("0,1,1/3,0,0"),
               _config("0,0,1,1/2,4")]
    shared = make_supernet().train()
    sandwich_step(shared, images, labels, torch.optim.SGD(shared.parameters(), lr=0.0), configs,
                  label_smoothing=0.1)
    separate = make_supernet().train()
    logits = []
    for config in configs:
        separate.set_config(config)
        logits.append(separate(images))
    _soft_targets_loss(logits, labels).backward()
    for (name, a), (_, b) in zip(shared.named_parameters(), separate.named_parameters(),
                                 strict=True):
        if b.grad is None:
            assert a.grad is None or not a.grad.any(), name
            continue
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-6, msg=name)


def test_sandwich_step_trains_largest_and_smallest(make_supernet):
    images, labels = _images()
    largest, smallest = largest_config(SPACE), _config("0,0,0,0,2")
    init = make_supernet()
    runs = {}
    for name, configs in {"largest": [largest], "sandwich": [largest, smallest, smallest]}.items():
        supernet = make_supernet().train()
        sandwich_step(supernet, images, labels, torch.optim.SGD(supernet.parameters(), lr=0.1),
                      configs, label_smoothing=0.1)
        runs[name] = supernet
    sandwich = runs["sandwich"]
    columns = {c: sandwich.classifier_index(c) for c in (largest, smallest)}
    only_largest = sorted(set(columns[largest].tolist()) - set(columns[smallest].tolist()))
    # Largest: its exclusive classifier columns and shortcut rows move ...
    assert not torch.equal(sandwich.fc.weight[:, only_largest], init.fc.weight[:, only_largest])
    block5 = sandwich.shortcuts[4].conv.weight
    assert not torch.equal(block5[smallest.shortcut_channels[4]:],
                           init.shortcuts[4].conv.weight[smallest.shortcut_channels[4]:])
    # ... and only the largest teaches them (plain SGD: the smallest's loss cannot reach them).
    torch.testing.assert_close(sandwich.fc.weight[:, only_largest],
                               runs["largest"].fc.weight[:, only_largest])
    # Smallest: its own loss moves its columns beyond what the largest alone does.
    mine = columns[smallest]
    assert (sandwich.fc.weight[:, mine] - runs["largest"].fc.weight[:, mine]).abs().max() > 1e-6


def test_scores_equal_extracted_models(monkeypatch, make_supernet):
    supernet = make_supernet().eval()
    images, labels = _images(n=12)
    loader = DataLoader(TensorDataset(images, labels), batch_size=5)
    features, seen = widest_features(supernet, loader)
    assert features.shape == (12, sum(supernet.widths))
    configs = [_config(text) for text in CONFIGS]
    logits = config_logits(supernet, features, configs)
    top1, top5 = score_features(supernet, features, seen, configs)
    for config, mine, acc1, acc5 in zip(configs, logits, top1, top5, strict=True):
        with torch.no_grad():
            reference = supernet.extract(config).eval()(images)
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-5)
        top = reference.topk(5, dim=1).indices == labels[:, None]
        assert acc1 == pytest.approx(100 * top[:, 0].float().mean().item())
        assert acc5 == pytest.approx(100 * top.any(1).float().mean().item())
    # Chunked over images and configurations, the counts are the same.
    monkeypatch.setattr("rhosearch.stages.oneshot._TABLE_ELEMENTS", 5000)
    monkeypatch.setattr("rhosearch.stages.oneshot._LOGIT_ELEMENTS", 100)
    chunked = score_features(supernet, features, seen, configs)
    assert chunked[0].tolist() == list(top1) and chunked[1].tolist() == list(top5)
    frame = score_space(supernet, loader, configs)
    assert list(frame["rho"]) == [c.rho_text for c in configs]
    assert frame["top1"].tolist() == pytest.approx(list(top1))


def test_smallest_and_largest():
    cost = CostModel(SPACE.backbone, resolution=64, num_classes=10)
    smallest = smallest_config(SPACE, cost)
    assert smallest.classifier_channels == min(c.classifier_channels for c in SPACE.configs())
    assert smallest.rho_text == "0,0,1/3,0,0"
    channels = [c.shortcut_channels for c in SPACE.configs()]
    widest = tuple(max(widths) for widths in zip(*channels, strict=True))
    assert largest_config(SPACE).shortcut_channels == widest == (0, 24, 48, 32, 320)


def test_oneshot_front_is_non_dominated():
    scores = pd.DataFrame({
        "rho": ["0,0,0,0,2", "0,0,0,0,4", "0,0,1,0,2", "0,0,1,1/2,4", "0,1,0,0,2"],
        "backbone": SPACE.backbone,
        "params": [1100, 1300, 1200, 1400, 1200],
        "overhead_params": [100, 300, 200, 400, 200],
        "top1": [50.0, 70.0, 60.0, 65.0, 60.0],
    })
    # The one Pareto rule of rhosearch (study.pareto_front), applied to one-shot scores as the
    # search does: ties on both objectives both stay.
    front = pareto_front(scores.assign(stage="oneshot", state="COMPLETE"), stage="oneshot")
    assert set(front["rho"]) == {"0,0,0,0,2", "0,0,1,0,2", "0,1,0,0,2", "0,0,0,0,4"}



def run_oneshot_stage(study, space, **kwargs):
    """What the search driver does: train and score the supernet, then record the scores."""
    scores = score_supernet(space, **kwargs)
    record_scores(study, space, scores)
    return scores

TINY = dict(epochs=2, batch_size=16, subset=32, warmup_fraction=0.5)
SMALL_SPACE = parse_search_space({
    "backbone": "mobilevit_xxs",
    "rho": {"rho_3": [0, "1/3"], "rho_4": [0, "1/4"], "rho_5": [1, 2]},
})


def test_supernet_resumes_exactly(tmp_path):
    recipe = load_recipe("proxy", TINY)
    straight, result = train_supernet(SMALL_SPACE, recipe=recipe, out_dir=tmp_path / "a",
                                      progress=False, validate=False)
    assert result["epochs_done"] == 2 and result["status"] == "ok"

    def stop(metrics):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_supernet(SMALL_SPACE, recipe=recipe, out_dir=tmp_path / "b", on_epoch=stop,
                       progress=False, validate=False)
    resumed, _ = train_supernet(SMALL_SPACE, recipe=recipe, out_dir=tmp_path / "b",
                                resume=True, progress=False, validate=False)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 2


def test_run_oneshot_stage_records_every_config(tmp_path):
    recipe = load_recipe("proxy", TINY)
    assert recipe.val_every == 0  # as in a search: only the last of the 2 epochs validates
    study = optuna.create_study(directions=["maximize", "minimize"])
    scores = run_oneshot_stage(study, SMALL_SPACE, data="digits", recipe=recipe,
                               out_dir=tmp_path, seed=0, progress=True)
    epochs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert ["top1_largest" in epoch for epoch in epochs] == [False, True]
    configs = list(SMALL_SPACE.configs())
    assert len(scores) == len(configs) == len(study.trials)
    frame = trials_frame(study)
    assert set(frame["stage"]) == {"oneshot"} and set(frame["state"]) == {"COMPLETE"}
    # Screening scores: labelled so, with no interval (a supernet gives no seed spread).
    assert (frame["vs_baseline"] == "screening score").all()
    assert frame["top1_lo"].isna().all() and frame["top1_hi"].isna().all()
    trial = study.trials[0]
    assert trial.values == [trial.user_attrs["top1"], trial.user_attrs["overhead_params"]]
    assert set(trial.params) == {"rho_3", "rho_4", "rho_5"}
    assert trial.user_attrs["gmacs"] > 0 and trial.user_attrs["status"] == "ok"
    front = pareto_front(scores.assign(stage="oneshot", state="COMPLETE"), stage="oneshot")
    assert len(front) and set(front["rho"]) <= {c.rho_text for c in SMALL_SPACE.configs()}
    # A rerun loads the finished supernet and adds no duplicate trials.
    run_oneshot_stage(study, SMALL_SPACE, data="digits", recipe=recipe, out_dir=tmp_path, seed=0,
                      progress=False)
    assert len(study.trials) == len(configs)


@pytest.mark.filterwarnings("ignore:Detected call of")  # the step never reaches the optimizer
def test_diverged_supernet_stops_the_stage(tmp_path, monkeypatch):
    monkeypatch.setattr("rhosearch.stages.oneshot.sandwich_step", lambda *a, **k: (math.nan, 0.0))
    recipe = load_recipe("proxy", TINY)
    _, result = train_supernet(SMALL_SPACE, recipe=recipe, out_dir=tmp_path, progress=False,
                               validate=False)
    assert (result["status"], result["epochs_done"]) == ("diverged", 1)
    study = optuna.create_study(directions=["maximize", "minimize"])
    with pytest.raises(RhoSearchError, match="diverged after 1 epochs"):
        run_oneshot_stage(study, SMALL_SPACE, data="digits", recipe=recipe, out_dir=tmp_path,
                          seed=0, progress=False)
    assert not study.trials
