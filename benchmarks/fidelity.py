"""How far the proxy and one-shot rankings of rho can be trusted: seed noise and Kendall's tau.

    python benchmarks/fidelity.py                        # fashion-mnist, ~45 min on 2 CPUs
    python benchmarks/fidelity.py --extra 4 --reference-epochs 12 --workers 2
    python benchmarks/fidelity.py --out reports/benchmarks/fidelity   # rerun: reuses results
    python benchmarks/fidelity.py --import-study fmnist  # reuse a search's identical runs
    python benchmarks/fidelity.py --only head --head-trunks 4 --head-seeds 2

Trains M configurations of the MobileViT-S space (the paper's six from `paper_table5.yaml`,
then the narrowest and widest feasible ones, then `--extra` more spread over classifier widths)
with the proxy recipe (`proxy_fmnist`, `--seeds` seeds each) and with a longer reference recipe
(the proxy with `--reference-epochs`, default 3x its epochs, one seed), and trains the supernet
on the proxy recipe with `--supernet-seeds` seeds, scoring every configuration of the space with
each. Prints the seed spread of the proxy, the self-agreement of the proxy (tau between seeds)
and of the one-shot (tau between supernets: the ceilings for any agreement with them), tau of
each against the reference on seed-averaged values, tau between the proxy's top-1 after epoch
ceil(epochs / 2) (ASHA's first rung) and its final top-1, and the wall time of each kind of run.
Every tau comes from `rhosearch.record.stats.kendall_tau` with its n and bootstrap 95 % interval.

The head stage (`rhosearch/stages/head.py`): `--head-trunks` baseline trunks (proxy runs of
the baseline that keep their weights, seeds 0...) and every configuration's head on each, with
`--head-seeds` head seeds. Printed beside the others: its self-agreement (tau between the
configurations' mean top-1 on two disjoint halves of the trunks, the whole space, bootstrap
95 % CI), its tau against the reference and the proxy on the M configurations, and the pooled
standard deviation of one paired difference from the baseline (configuration minus baseline on
the same trunk and head seed) beside the proxy's (same seed). `--only head` trains only the
trunks and the heads and reports with whatever proxy, reference and supernet runs `--out`
already holds (the whole benchmark takes 1.5-2 h on 2 shared cores).

Runs go through a pool of `--workers` processes, each with one torch thread. Each finished run
leaves `record.json` in its folder under `--out` and is never trained again; a killed run
resumes from its checkpoint. Proxy and reference checkpoints are deleted once recorded; the
supernets' stay, for `benchmarks/sampler_table.py`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from rhosearch.core.cost import CostModel
from rhosearch.core.space import RhoConfig, SearchSpace, load_presets, load_search_space
from rhosearch.record.head import paired_sd
from rhosearch.record.stats import kendall_tau

DEFAULT_OUT = Path("reports/benchmarks/fidelity")


@dataclass(frozen=True)
class Job:
    """One training run: a proxy or reference trial of one configuration, or a supernet."""

    kind: str  # "proxy", "reference", "supernet" or "trunk" (the baseline, weights kept)
    seed: int
    epochs: int
    rho: str = ""  # empty for a supernet
    backbone: str = "mobilevit_s"

    def folder(self, out: Path) -> Path:
        if self.kind == "supernet":
            return out / f"supernet-seed{self.seed}"
        key = RhoConfig.parse(self.rho, backbone=self.backbone).key
        return out / self.kind / f"{key}-seed{self.seed}"


# --- which configurations ---------------------------------------------------------------------


def feasible(space: SearchSpace, config: RhoConfig, cost: CostModel) -> bool:
    """Within the space's constraints, priced as the search prices them (256 px, 1000 classes)."""
    price = cost.price(config)
    return ((space.max_overhead_pct is None or price.overhead_pct <= space.max_overhead_pct)
            and (space.max_gmacs is None or price.gmacs <= space.max_gmacs))


def pick_configs(space: SearchSpace, extra: int, *,
                 cost: CostModel | None = None) -> list[RhoConfig]:
    """The paper's configurations in the space, the narrowest and widest feasible ones, then
    `extra - 2` more at evenly spaced quantiles of classifier width."""
    cost = cost or CostModel(space.backbone, resolution=256, num_classes=1000)
    chosen = [p.config for p in load_presets().values() if space.contains(p.config)]
    pool = sorted((c for c in space.configs() if feasible(space, c, cost)),
                  key=lambda c: (c.classifier_channels, c.rho))
    wanted = [pool[0], pool[-1]][:extra]
    if extra > 2:
        wanted += [pool[round(q * (len(pool) - 1))] for q in np.linspace(0, 1, extra)[1:-1]]
    for config in wanted:
        if config not in chosen:
            chosen.append(config)
    return chosen


# --- one run, in a worker process -------------------------------------------------------------


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _epoch_top1(metrics: Path) -> list[float]:
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    return [json.loads(line).get("top1") for line in lines if line.strip()]


def _resuming(train: Callable[[bool], Any], folder: Path) -> Any:
    """`train(resume=True)`; a checkpoint this code cannot resume (written by another version
    of the training loop, or for another recipe) is deleted and the run starts over."""
    from rhosearch.errors import RhoSearchError

    try:
        return train(True)
    except RhoSearchError as exc:
        checkpoint = folder / "checkpoint.pt"
        if not checkpoint.is_file():
            raise
        print(f"{folder}: cannot resume ({exc}); starting over", flush=True)
        checkpoint.unlink()
        return train(False)


def run_job(job: Job, *, out: Path, data: str, recipe_name: str, space_name: str) -> dict:
    """Trains `job` (resuming its checkpoint) and returns its record, written to record.json."""
    from rhosearch.stages.oneshot import score_space, train_supernet
    from rhosearch.training.train import load_recipe, make_loaders, train_config

    folder = job.folder(out)
    # Every epoch validated (proxy recipes validate the last only): ASHA's rung needs its top-1.
    recipe = load_recipe(recipe_name, {"epochs": job.epochs, "val_every": 1})
    started = time.perf_counter()
    record: dict[str, Any] = asdict(job)
    if job.kind == "supernet":
        space = load_search_space(space_name)
        supernet, result = _resuming(
            lambda resume: train_supernet(space, data=data, recipe=recipe, out_dir=folder,
                                          seed=job.seed, resume=resume, progress=False), folder)
        scores = score_space(supernet, make_loaders(data, recipe, seed=job.seed).val,
                             list(space.configs()))
        scores.to_csv(folder / "scores.csv", index=False)
        record.update(status=result["status"], wall_s=result["wall_s"],
                      scores=dict(zip(scores["rho"], scores["top1"].astype(float), strict=True)))
    else:
        config = RhoConfig.parse(job.rho, backbone=job.backbone)
        # A trunk of the head stage is a proxy run of the baseline that keeps its weights.
        result = _resuming(
            lambda resume: train_config(config, data=data, recipe=recipe, out_dir=folder,
                                        seed=job.seed, resume=resume, progress=False,
                                        weights=job.kind == "trunk"), folder)
        record.update(status=result["status"], wall_s=result["wall_s"], top1=result["top1"],
                      top1_by_epoch=_epoch_top1(folder / "metrics.jsonl"))
        (folder / "checkpoint.pt").unlink(missing_ok=True)  # ~60 MB each; the record is the cache
    record["process_s"] = round(time.perf_counter() - started, 2)
    (folder / "record.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def run_all(jobs: list[Job], *, workers: int, **settings: Any) -> list[dict]:
    """Records of every job: cached ones read back, the rest trained `workers` at a time."""
    records, todo = [], []
    for job in jobs:
        cached = job.folder(settings["out"]) / "record.json"
        if cached.is_file():
            records.append(json.loads(cached.read_text()))
        else:
            todo.append(job)
    print(f"{len(records)} runs cached, {len(todo)} to train with {workers} workers x 1 thread",
          flush=True)
    # spawn, not fork: each worker starts its own torch with one thread.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                             initializer=_init_worker) as pool:
        futures = {pool.submit(run_job, job, **settings): job for job in todo}
        for done, future in enumerate(as_completed(futures), start=1):
            job = futures[future]
            try:
                record = future.result()
            except Exception as exc:  # one failed run must not stop the others' reports
                print(f"[{done}/{len(todo)}] {job.kind} {job.rho} seed {job.seed} FAILED: "
                      f"{type(exc).__name__}: {exc}", flush=True)
                continue
            records.append(record)
            top1 = f"top-1 {record['top1']:.2f}%" if "top1" in record else record["status"]
            print(f"[{done}/{len(todo)}] {record['kind']} {record['rho'] or ''} seed "
                  f"{record['seed']}: {top1}, {record['wall_s']:.0f} s training", flush=True)
    return records


def import_study(jobs: list[Job], *, study_name: str, reports_dir: Path, out: Path, data: str,
                 recipe_name: str) -> int:
    """Writes `record.json` for every job a finished search already ran identically: a proxy
    run of the same rho, seed, data and recipe (the search's proxy and noise-floor trials call
    the same `train_config` with one torch thread, as here), or the supernet of its one-shot
    stage (seed = the search's seed; that one trained with the search's 2 threads). Each record
    says where it came from. Returns how many were imported."""
    from rhosearch.record.study import load_study, trials_frame

    study = load_study(study_name, reports_dir=reports_dir)
    if (study.user_attrs.get("data"), study.user_attrs.get("recipe")) != (data, recipe_name):
        raise SystemExit(f"--import-study {study_name}: it searched {study.user_attrs.get('data')}"
                         f" with {study.user_attrs.get('recipe')}, not {data} with {recipe_name}")
    frame = trials_frame(study)
    done = frame[frame["stage"].isin(["proxy", "noise"]) & (frame["state"] == "COMPLETE")
                 & (frame["status"] == "ok")]
    folder = reports_dir / study_name
    imported = 0
    for job in jobs:
        target = job.folder(out) / "record.json"
        if target.is_file() or job.kind == "reference":
            continue
        record: dict[str, Any] = {**asdict(job), "imported_from": study_name}
        if job.kind == "supernet":
            scores = folder / "supernet" / "scores.csv"
            if job.seed != study.user_attrs.get("seed", 0) or not scores.is_file():
                continue
            import pandas as pd

            table = pd.read_csv(scores)
            wall = [json.loads(line).get("epoch_s", 0) for line in
                    (folder / "supernet" / "metrics.jsonl").read_text().splitlines()]
            record.update(status="ok", wall_s=round(sum(wall), 2), process_s=None,
                          scores=dict(zip(table["rho"], table["top1"].astype(float),
                                          strict=True)))
        else:
            match = done[(done["rho"] == job.rho) & (done["seed"] == job.seed)
                         & (done["epochs_done"] == job.epochs)]
            if match.empty:
                continue
            row = match.iloc[0]
            key = RhoConfig.parse(job.rho, backbone=job.backbone).key
            run = (folder / "noise" / f"seed{job.seed:03d}_{key}" if row["stage"] == "noise"
                   else folder / "trials" / f"{int(row['number']):04d}_{key}")
            if job.kind == "trunk":  # the search's head stage kept this noise seed's weights
                if not (run / "model.safetensors").is_file():
                    continue
                job.folder(out).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run / "model.safetensors",
                                job.folder(out) / "model.safetensors")
            record.update(status="ok", wall_s=float(row["wall_s"]), process_s=None,
                          top1=float(row["top1"]),
                          top1_by_epoch=_epoch_top1(run / "metrics.jsonl"))
            if job.kind != "trunk" and (len(record["top1_by_epoch"]) != job.epochs
                                        or None in record["top1_by_epoch"]):
                continue  # a search trial validated only at its end (see Recipe.val_every)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(record, indent=1) + "\n")
        imported += 1
    imported += _import_heads(jobs, folder / "head" / "runs.jsonl", out=out)
    return imported


def _import_heads(jobs: list[Job], runs_path: Path, *, out: Path) -> int:
    """Appends to this benchmark's head runs the search's heads on the trunks it imported (the
    same trunk weights, head recipe and head seeds train the same heads: trunk id = seed in
    both); returns how many. A search whose head recipe differs (`--set` on it) is skipped:
    its runs file does not say, so only the default head recipe is trusted."""
    from rhosearch.stages.head import read_runs
    from rhosearch.training.train import load_recipe

    trunks = {job.seed for job in jobs if job.kind == "trunk"
              and (job.folder(out) / "record.json").is_file()
              and json.loads((job.folder(out) / "record.json").read_text()).get("imported_from")}
    epochs = load_recipe("head").epochs
    target = out / "head" / f"runs-{epochs}ep.jsonl"
    have = {run.key for run in read_runs(target)}
    new = [run for run in read_runs(runs_path) if run.trunk in trunks and run.key not in have]
    if new:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a") as file:
            file.write("".join(json.dumps(run.__dict__) + "\n" for run in new))
    return len(new)


# --- the figures (pure: records in, numbers out) -----------------------------------------------


def seed_spread(values: dict[str, list[float]]) -> tuple[dict[str, float], float]:
    """Per configuration the std (ddof 1) of top-1 over seeds, and the pooled std: the root of
    the mean per-configuration variance, weighted by degrees of freedom."""
    stds = {rho: float(np.std(v, ddof=1)) for rho, v in values.items() if len(v) > 1}
    dof = sum(len(v) - 1 for v in values.values() if len(v) > 1)
    pooled = (math.sqrt(sum(float(np.var(v, ddof=1)) * (len(v) - 1)
                            for v in values.values() if len(v) > 1) / dof)
              if dof else math.nan)
    return stds, pooled


def rung_pairs(records: list[dict], kind: str) -> tuple[int, list[float], list[float]]:
    """ASHA's question for `kind` runs: (the rung epoch ceil(epochs / 2), top-1 there, final)."""
    runs = [r for r in records if r["kind"] == kind and len(r["top1_by_epoch"]) == r["epochs"]]
    if not runs:
        return 0, [], []
    rung = math.ceil(runs[0]["epochs"] / 2)
    return rung, [r["top1_by_epoch"][rung - 1] for r in runs], [r["top1_by_epoch"][-1]
                                                               for r in runs]


def by_config(records: list[dict], kind: str, seeds: int) -> dict[str, list[float]]:
    """rho -> top-1 per seed (seed order) of `kind` runs."""
    table: dict[str, list[float]] = {}
    for r in sorted((r for r in records if r["kind"] == kind), key=lambda r: r["seed"]):
        table.setdefault(r["rho"], []).append(r["top1"])
    return {rho: v for rho, v in table.items() if len(v) == seeds}


# --- the head stage ---------------------------------------------------------------------------


def run_heads(records: list[dict], configs: list[RhoConfig], args: argparse.Namespace) -> dict:
    """Trains (or reads back) every configuration's heads on every trunk in `records`; returns
    rho -> trunk -> head seed -> top-1, and the stage's wall time and heads trained."""
    import torch
    from safetensors.torch import load_model

    from rhosearch.core.model import create_model
    from rhosearch.stages.head import read_runs, train_heads_on_trunk
    from rhosearch.training.data import ScaledDataset, build_datasets
    from rhosearch.training.train import load_recipe

    recipe = load_recipe(args.recipe)
    head_recipe = load_recipe("head", {"epochs": args.head_epochs} if args.head_epochs else {})
    train, val = build_datasets(args.data, resolution=recipe.resolution, subset=recipe.subset,
                                val_subset=recipe.val_subset, crop_pct=recipe.crop_pct)
    plain = ScaledDataset(train.base, resolution=recipe.resolution, train=False,
                          crop_pct=recipe.crop_pct)
    loaders = {"train": torch.utils.data.DataLoader(plain, batch_size=256),
               "val": torch.utils.data.DataLoader(val, batch_size=256)}
    folder = args.out / "head"
    folder.mkdir(parents=True, exist_ok=True)
    runs_path = folder / f"runs-{head_recipe.epochs}ep.jsonl"
    torch.set_num_threads(args.workers)
    started, trained = time.perf_counter(), 0
    for record in sorted((r for r in records if r["kind"] == "trunk"), key=lambda r: r["seed"]):
        job = Job("trunk", record["seed"], record["epochs"], record["rho"], record["backbone"])
        trunk = create_model(RhoConfig.parse(job.rho, backbone=job.backbone), num_classes=10)
        load_model(trunk, str(job.folder(args.out) / "model.safetensors"))
        trained += len(train_heads_on_trunk(
            job.seed, trunk, configs, train=loaders["train"], val=loaders["val"],
            recipe=head_recipe, head_seeds=range(args.head_seeds), runs_path=runs_path,
            log=lambda line: print(line, flush=True)))
    table: dict[str, dict[int, dict[int, float]]] = {}
    for run in read_runs(runs_path):
        table.setdefault(run.rho, {}).setdefault(run.trunk, {})[run.head_seed] = run.top1
    return {"top1": table, "wall_s": time.perf_counter() - started, "trained": trained,
            "epochs": head_recipe.epochs}


def report_heads(heads: dict, configs: list[RhoConfig], records: list[dict],
                 args: argparse.Namespace) -> None:
    table = heads["top1"]
    baseline = next(c for c in configs if c.is_baseline).rho_text
    trunks = sorted({t for by_trunk in table.values() for t in by_trunk})
    mean = {rho: float(np.mean([v for s in by.values() for v in s.values()]))
            for rho, by in table.items()}
    print(f"\n== head stage ({len(table)} configurations x {len(trunks)} trunks x "
          f"{args.head_seeds} head seeds, {heads['epochs']} head epochs) ==")
    print(f"  trained now: {heads['trained']} heads in {heads['wall_s']:.0f} s wall "
          f"({heads['trained'] / max(heads['wall_s'], 1e-9):.2f} heads/s; cached heads cost "
          "nothing)")
    halves = [trunks[0::2], trunks[1::2]]
    if all(halves):
        half_means = [{rho: float(np.mean([v for t in half if t in by for v in by[t].values()]))
                       for rho, by in table.items() if all(t in by for t in trunks)}
                      for half in halves]
        rhos = sorted(half_means[0])
        print(_tau_line(f"head self-agreement, trunks {halves[0]} vs {halves[1]}, whole set",
                        [half_means[0][r] for r in rhos], [half_means[1][r] for r in rhos]))
    else:
        print("  head self-agreement: not measured (fewer than 2 trunks)")
    reference = {rho: v[0] for rho, v in by_config(records, "reference", 1).items()}
    proxy = by_config(records, "proxy", args.seeds)
    chosen = [c.rho_text for c in configs if c.rho_text in mean]
    for name, other in (("reference", reference),
                        ("proxy seed mean", {r: float(np.mean(v)) for r, v in proxy.items()})):
        both = [r for r in chosen if r in other]
        if len(both) >= 2:
            print(_tau_line(f"tau(head mean, {name}), M", [mean[r] for r in both],
                            [other[r] for r in both]))
        else:
            print(f"  tau(head mean, {name}): not measured (no {name} runs in {args.out})")
    keyed = {rho: {(t, s): v for t, by in by_trunk.items() for s, v in by.items()}
             for rho, by_trunk in table.items()}
    sd, df = paired_sd(keyed, baseline)
    per_trunk = {rho: {t: float(np.mean(list(by.values()))) for t, by in by_trunk.items()}
                 for rho, by_trunk in table.items()}
    sd_trunk, df_trunk = paired_sd(per_trunk, baseline)
    print(f"  paired sd of a difference from the baseline: head {sd:.2f} pts per (trunk, head "
          f"seed) ({df} df), {sd_trunk:.2f} pts per trunk mean ({df_trunk} df)")
    proxy_runs = {rho: dict(enumerate(v)) for rho, v in proxy.items()}
    sd_proxy, df_proxy = paired_sd(proxy_runs, baseline)
    print("  paired sd of a difference from the baseline: proxy "
          + (f"{sd_proxy:.2f} pts per seed ({df_proxy} df)" if df_proxy else
             f"not measured (no proxy runs in {args.out})"))


# --- printing ---------------------------------------------------------------------------------


def _tau_line(label: str, x: list[float], y: list[float]) -> str:
    return f"  {label:<58s} {kendall_tau(x, y).text()}"


def report(records: list[dict], configs: list[RhoConfig], args: argparse.Namespace) -> None:
    rhos = [c.rho_text for c in configs]
    proxy = by_config(records, "proxy", args.seeds)
    reference = {rho: v[0] for rho, v in by_config(records, "reference", 1).items()}
    nets = sorted((r for r in records if r["kind"] == "supernet"), key=lambda r: r["seed"])
    shot = {rho: [n["scores"][rho] for n in nets] for rho in nets[0]["scores"]} if nets else {}
    cost = CostModel(configs[0].backbone, resolution=256, num_classes=1000)

    print(f"\n== per configuration (top-1 %, {args.data}, val {args.val_images} images) ==")
    print(f"{'config':<22s}{'overhead':>10s}{'proxy/seed':>{8 * args.seeds + 2}s}{'mean':>7s}"
          f"{'std':>6s}{'ref':>7s}{'1-shot/net':>{8 * len(nets) + 2}s}")
    for config, rho in zip(configs, rhos, strict=True):
        p, s = proxy.get(rho, []), shot.get(rho, [])
        print(f"{config.name:<22s}{cost.price(config).overhead_params:>10,d}  "
              + "".join(f"{v:8.2f}" for v in p)
              + (f"{np.mean(p):7.2f}{np.std(p, ddof=1):6.2f}" if len(p) > 1 else "")
              + f"{reference.get(rho, math.nan):7.2f}  " + "".join(f"{v:8.2f}" for v in s))

    imported = [r for r in records if r.get("imported_from")]
    if imported:
        print(f"  ({len(imported)} runs imported from study "
              f"{', '.join(sorted({r['imported_from'] for r in imported}))}: "
              + ", ".join(f"{r['kind']} {r['rho']} seed {r['seed']}".replace("  ", " ")
                          for r in imported) + ")")
    stds, pooled = seed_spread({rho: proxy[rho] for rho in rhos if rho in proxy})
    means = [float(np.mean(proxy[rho])) for rho in rhos if rho in proxy]
    print("\n== noise ==")
    if stds:
        print(f"  proxy seed std per config: min {min(stds.values()):.2f}, median "
              f"{np.median(list(stds.values())):.2f}, max {max(stds.values()):.2f} pts; pooled "
              f"{pooled:.2f} pts ({len(stds)} configs x {args.seeds} seeds)")
    else:
        print(f"  proxy seed std: not measured (no configuration has {args.seeds} proxy seeds)")
    if len(means) > 1:
        print(f"  spread between configs (std of seed means): {np.std(means, ddof=1):.2f} pts; "
              f"range {min(means):.2f}-{max(means):.2f}")
    if means:
        p_mean = np.mean(means) / 100
        print(f"  validation binomial SE at {100 * p_mean:.1f}%: "
              f"{100 * math.sqrt(p_mean * (1 - p_mean) / args.val_images):.2f} pts")
    if shot:
        _, shot_pooled = seed_spread({rho: shot[rho] for rho in rhos})
        # A supernet-wide offset counts here but not in tau: print each supernet's level too.
        levels = ", ".join(f"{np.mean([v[i] for v in shot.values()]):.2f}%"
                           for i in range(len(nets)))
        print(f"  one-shot supernet-to-supernet std, pooled over the M configs: "
              f"{shot_pooled:.2f} pts (mean one-shot top-1 over the space per supernet: "
              f"{levels})")
    base = next(c for c in configs if c.is_baseline)
    print(f"  baseline {base.name} proxy top-1 per seed: "
          + ", ".join(f"seed {s}: {v:.2f}%" for s, v in enumerate(proxy.get(base.rho_text, []))))

    both = [rho for rho in rhos if rho in proxy and rho in reference and rho in shot]
    proxy_mean = [float(np.mean(proxy[rho])) for rho in both]
    shot_mean = [float(np.mean(shot[rho])) for rho in both]
    ref = [reference[rho] for rho in both]
    print(f"\n== Kendall's tau-b (bootstrap 95% CI; M = {len(both)} configs) ==")
    if args.seeds > 1:
        print(_tau_line("proxy self-agreement tau(seed 0, seed 1)",
                        [proxy[r][0] for r in both], [proxy[r][1] for r in both]))
    else:
        print("  proxy self-agreement: not measured (one proxy seed per configuration)")
    if len(nets) < 2:
        print("  one-shot self-agreement: not measured (one supernet)")
    if len(nets) > 1:
        print(_tau_line("one-shot self-agreement tau(supernet 0, supernet 1), M",
                        [shot[r][0] for r in both], [shot[r][1] for r in both]))
        print(_tau_line("one-shot self-agreement, whole space",
                        [v[0] for v in shot.values()], [v[1] for v in shot.values()]))
    print(_tau_line(f"tau(proxy seed mean, reference {args.reference_epochs} ep)",
                    proxy_mean, ref))
    print(_tau_line("tau(one-shot supernet mean, reference)", shot_mean, ref))
    print(_tau_line("tau(one-shot supernet mean, proxy seed mean)", shot_mean, proxy_mean))
    for kind in ("proxy", "reference"):
        rung, early, final = rung_pairs(records, kind)
        if early:
            epochs = args.epochs if kind == "proxy" else args.reference_epochs
            print(_tau_line(f"{kind} runs: tau(top-1 at epoch {rung}, final epoch {epochs})",
                            early, final))

    print("\n== wall time per run (training only; 1 thread each, "
          f"{args.workers} at once on a shared machine) ==")
    for kind in ("proxy", "reference", "supernet"):
        walls = [r["wall_s"] for r in records if r["kind"] == kind]
        if walls:
            print(f"  {kind:<10s} n = {len(walls):2d}: mean {np.mean(walls):6.0f} s, "
                  f"min {min(walls):6.0f} s, max {max(walls):6.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--recipe", default="proxy_fmnist")
    parser.add_argument("--space", default="exmobilevit_s")
    parser.add_argument("--extra", type=int, default=2,
                        help="configurations beyond the paper's (narrowest, widest, then spread)")
    parser.add_argument("--seeds", type=int, default=2, help="proxy seeds per configuration")
    parser.add_argument("--supernet-seeds", type=int, default=2)
    parser.add_argument("--reference-epochs", type=int, default=None,
                        help="default: 3x the proxy recipe's epochs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--import-study", metavar="STUDY",
                        help="reuse the identical proxy runs and supernet of a finished "
                        "`rhosearch search --data fashion-mnist --study STUDY --set "
                        "val_every=1` (same recipe, seed and data, every epoch validated): they "
                        "are not trained again")
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"))
    parser.add_argument("--only", choices=("head",), default=None,
                        help="head: train only the head stage's trunks and heads")
    parser.add_argument("--head-trunks", type=int, default=4)
    parser.add_argument("--head-seeds", type=int, default=2)
    parser.add_argument("--head-epochs", type=int, default=None,
                        help="default: the head recipe's")
    parser.add_argument("--head-space", choices=("space", "picked"), default="space",
                        help="heads of the whole space (default) or of the M configurations")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: print the figures the cached runs allow (with "
                        "--seeds 1 --supernet-seeds 1 for a partial run)")
    args = parser.parse_args()

    from rhosearch.training.train import load_recipe

    recipe = load_recipe(args.recipe)
    args.epochs = recipe.epochs
    args.reference_epochs = args.reference_epochs or 3 * recipe.epochs
    args.val_images = recipe.val_subset or 0
    space = load_search_space(args.space)
    configs = pick_configs(space, args.extra)
    print(f"{len(configs)} configurations: " + "; ".join(c.name for c in configs))
    # Longest first, so the two workers finish together.
    jobs = ([Job("reference", 0, args.reference_epochs, c.rho_text, c.backbone) for c in configs]
            + [Job("supernet", s, recipe.epochs, "", space.backbone)
               for s in range(args.supernet_seeds)]
            + [Job("proxy", s, recipe.epochs, c.rho_text, c.backbone) for s in range(args.seeds)
               for c in configs])
    baseline = next(c for c in configs if c.is_baseline)
    trunks = [Job("trunk", s, recipe.epochs, baseline.rho_text, baseline.backbone)
              for s in range(args.head_trunks)]
    if args.only == "head":
        cached = [job for job in jobs if (job.folder(args.out) / "record.json").is_file()]
        print(f"--only head: {len(trunks)} trunks; {len(cached)} other runs cached in "
              f"{args.out} are reported beside them", flush=True)
        records = [json.loads((job.folder(args.out) / "record.json").read_text())
                   for job in cached]
        records += run_all(trunks, workers=args.workers, out=args.out, data=args.data,
                           recipe_name=args.recipe, space_name=args.space)
        head_configs = list(space.configs()) if args.head_space == "space" else configs
        report_heads(run_heads(records, head_configs, args), configs, records, args)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  peak memory of this process: {peak:.0f} MiB resident")
        return
    jobs += trunks
    if args.import_study:
        count = import_study(jobs, study_name=args.import_study, reports_dir=args.reports_dir,
                             out=args.out, data=args.data, recipe_name=args.recipe)
        print(f"imported {count} identical runs from study {args.import_study!r}", flush=True)
    started = time.perf_counter()
    if args.report_only:
        records = [json.loads((job.folder(args.out) / "record.json").read_text())
                   for job in jobs if (job.folder(args.out) / "record.json").is_file()]
        print(f"report only: {len(records)} of {len(jobs)} runs cached", flush=True)
    else:
        records = run_all(jobs, workers=args.workers, out=args.out, data=args.data,
                          recipe_name=args.recipe, space_name=args.space)
    print(f"all runs done in {time.perf_counter() - started:.0f} s wall "
          f"(cached runs cost nothing)")
    report(records, configs, args)
    head_configs = list(space.configs()) if args.head_space == "space" else configs
    report_heads(run_heads(records, head_configs, args), configs, records, args)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the spawned workers
    main()
