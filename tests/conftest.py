"""Fixtures shared by the test modules."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import ray
import torch
from helpers import XXS_SPACE_YAML

from rhosearch.execution.resources import Budget, start_ray

ROOT = Path(__file__).resolve().parent.parent


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


# --- the two tiers ---------------------------------------------------------------------------
# `pytest` runs the fast tier: no Ray, no subprocess, no browser. `pytest -m slow` runs the rest
# (.ci/run runs both). The tier is decided here, in one place, so a new test needs no marker of
# its own: it is slow when it asks for one of SLOW_FIXTURES, sits in one of SLOW_FILES (every
# test there runs a search, a cluster or a process), or is named in SLOW_TESTS. A fast-tier test
# that starts Ray or a subprocess fails and says to add it here.
SLOW_FIXTURES = {"shared_ray", "search_command"}
SLOW_FILES = {"test_search.py", "test_finalists.py", "test_scale.py", "test_robust.py",
              "test_lease.py"}
SLOW_TESTS = {
    "test_a_stale_ray_address_file_is_ignored",  # test_bad_inputs.py: a Ray start
    "test_a_study_left_mid_write_by_a_killed_driver_opens_rolled_back",  # a killed process
    "test_help_never_imports_torch_or_ray",  # test_cli.py: a fresh interpreter
    "test_count_table_cuts_no_header_or_cell",  # test_cli.py: cli.py in a terminal's width
    "test_wheel_installs_and_runs_outside_the_checkout",  # test_package.py: pip, a wheel
    "test_report_draws_in_headless_chromium",  # test_report.py: a browser
    "test_cli_report_html_end_to_end",  # test_report.py: cli.py as a process
    "test_cli_train_runs_and_writes_its_result",  # test_train.py: cli.py as a process
    "test_without_onnxruntime_latency_names_the_extra",  # test_latency.py: cli.py as a process
    # test_latency.py: two ONNX exports and real timings (~20 s on 2 loaded cores)
    "test_rhosearch_latency_times_a_tiny_model_for_real_then_reads_it_from_the_table",
    "test_resume_after_kill_does_not_retrain_finished_heads",  # test_head.py: a killed process
    # The fast tier's longest (seconds on 2 shared cores, pytest --durations): whole trainings
    # and ONNX exports, in the slow tier to keep the default run short.
    "test_run_oneshot_stage_records_every_config",  # test_oneshot.py: 111 s
    "test_cli_export_follows_the_weights_and_takes_any_batch_and_size",  # test_export.py: 83 s
    "test_supernet_resumes_exactly",  # test_oneshot.py: 56 s
    "test_a_dynamic_export_leaves_only_its_file",  # test_export.py: 56 s
    "test_count_all_json_lists_the_six_paper_configurations",  # test_cli.py: 42 s
    "test_bank_matches_looped_heads",  # test_head.py: 29 s
    # Every other fast-tier test over ~2 s on quiet cores: the 60 longest of
    # `pytest --durations=60` at 6c60d06 (2 cores shared with other runs, load average ~4.6,
    # so ~3.6 s there is ~2 s quiet). A parametrized test is named whole when every case of it
    # was long, else by the case's id (`name[id]`) so its quick cases stay in the fast tier.
    "test_a_failed_checkpoint_write_keeps_the_last_one_and_no_metrics_line",  # test_train.py: 72 s
    "test_killed_run_resumes_to_the_same_weights",  # test_train.py: 69 s
    "test_closed_form_equals_fvcore_and_exact_params",  # test_cost.py: 46 s
    "test_extracted_model_equals_supernet",  # test_model.py: 39 s
    "test_shared_forward_matches_separate_forwards",  # test_oneshot.py: 31 s
    # test_train.py: 30 s
    "test_an_unvalidated_epoch_has_no_accuracy_and_the_result_is_the_last_validated",
    "test_a_short_runs_ema_follows_the_trained_weights",  # test_train.py: 28 s
    "test_timm_loader_round_trip_for_a_registered_preset",  # test_export.py: 26 s
    "test_count_rho_csv",  # test_cli.py: 26 s
    "test_resume_refuses_another_runs_checkpoint",  # test_train.py: 25 s
    # test_bad_inputs.py: 24 s
    "test_an_export_that_fails_its_check_leaves_the_file_that_was_there",
    "test_paper_points_are_labelled_and_never_in_our_front",  # test_report.py: 21 s
    "test_a_truncated_checkpoint_is_refused_in_one_line",  # test_train.py: 19 s
    "test_nan_loss_ends_the_run_as_diverged",  # test_train.py: 17 s
    "test_static_size_onnx_export_matches_pytorch",  # test_export.py: 17 s
    "test_scores_equal_extracted_models",  # test_oneshot.py: 17 s
    "test_default_cfg_as_timm_checks_a_non_standard_model",  # test_timm_conformance.py: 13 s
    "test_sandwich_step_trains_largest_and_smallest",  # test_oneshot.py: 11 s
    "test_baseline_equals_timm_mobilevit",  # test_model.py: 11 s
    "test_forward_and_backward",  # test_timm_conformance.py: 11 s
    # test_bad_inputs.py: 10 s
    ("test_a_bad_input_is_one_line_exit_2_and_changes_nothing"
     "[train-best_--study_s_--gpus-per-trial_1_--budget_2cpus]"),
    "test_kendall_tau_value_and_bootstrap_interval",  # test_stats.py: 9 s
    "test_configurations_see_the_same_images_in_the_same_order",  # test_head.py: 9 s
    "test_trunk_is_frozen_and_keeps_its_mode",  # test_head.py: 9 s
    "test_project_loader_round_trip_from_metadata_alone",  # test_export.py: 9 s
    # test_bad_inputs.py: 8 s
    "test_a_bad_input_is_one_line_exit_2_and_changes_nothing[train-best_--study_s]",
    "test_finalists_table_in_the_html",  # test_report.py: 8 s
    # test_bad_inputs.py: 7 s
    ("test_a_bad_input_is_one_line_exit_2_and_changes_nothing"
     "[search_--space_space.yaml_--study_s0]"),
    # test_bad_inputs.py: 7 s
    "test_a_bad_input_is_one_line_exit_2_and_changes_nothing[report_--study_s]",
    "test_onnx_mismatch_is_an_error_and_removes_the_file",  # test_export.py: 7 s
    # test_bad_inputs.py: 7 s
    "test_a_bad_input_is_one_line_exit_2_and_changes_nothing[report_--study_s_--format_csv]",
    # test_bad_inputs.py: 7 s
    ("test_a_bad_input_is_one_line_exit_2_and_changes_nothing"
     "[search_--space_space.yaml_--study_s_--resume]"),
    "test_calibration_benchmark_ends_with_one_line_per_rule",  # test_benchmarks.py: 6 s
    "test_a_pruned_rho_proposed_again_runs_again[memory]",  # test_study.py: 5 s
    # test_bad_inputs.py: 5 s
    "test_an_address_where_something_else_listens_is_refused_in_seconds[silent]",
    "test_classifier_input_width_is_eq_1[exmvit-576]",  # test_model.py: 5 s
    "test_supernet_training_updates_only_the_active_prefix_of_bn_statistics",  # test_model.py: 5 s
    "test_latency_is_carried_by_the_front_table_and_drawn_beside_params",  # test_report.py: 4 s
    "test_fx_forward_and_backward",  # test_timm_conformance.py: 4 s
    "test_presets_are_in_timms_registry",  # test_model.py: 4 s
    "test_cli_export_static_size_and_one_line_errors",  # test_export.py: 4 s
    "test_cached_map_head_equals_full_model",  # test_head.py: 4 s
    "test_torchscript[exmobilevit_s_576]",  # test_timm_conformance.py: 4 s
    # test_latency.py: 4 s
    "test_the_sequential_rule_says_differs_at_most_5_percent_of_the_time_under_no_difference",
    "test_rank_agreement_known_rankings_with_count_and_interval",  # test_report.py: 4 s
    "test_attention_is_counted",  # test_cost.py: 4 s
}


def _is_slow(item: pytest.Item) -> bool:
    return (item.path.name in SLOW_FILES or item.originalname in SLOW_TESTS
            or item.name in SLOW_TESTS
            or not SLOW_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a file


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_ray_or_process(request: pytest.FixtureRequest,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("slow") is not None:
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{request.node.originalname} starts Ray or a process: list it in "
                             "SLOW_TESTS (tests/conftest.py) to run it in the slow tier")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if ray.is_initialized():
        ray.shutdown()
