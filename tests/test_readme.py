"""Every command in a command table of the README or of docs/ runs in the test suite. This file says which tests
run each one, and fails when a page gains a command that no test runs, or when a named test disappears. The README
stays a front door: at most 250 lines, the offline first run in its first 60, every docs/ page it links there.

Where a command cannot run here as written (the network, a GPU, a SLURM cluster), the tests run what this machine
can: the download over a loopback HTTP server, the hub in offline mode, DDP on two CPU processes, submitit's local
launcher, which the README says too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .conftest import REPO

COMMAND_TESTS = {
    "python train.py": [
        "test_prepare.py::test_datamodule_downloads_on_first_use",  # the dataset, over loopback HTTP
        "test_combinations.py::test_an_unreachable_hub_switches_to_offline_mode_at_once",  # hub weights, offline
        "test_train.py::test_short_real_run",
    ],
    "python train.py model=efficientnet_b0 data.batch_size=64 trainer.max_epochs=20": [
        "test_model.py::test_model_config_builds_and_starts_at_half",
        "test_train.py::test_train_py_fast_dev_run",
    ],
    "python train.py experiment=real_vs_ai_lite0": ["test_train.py::test_short_real_run"],
    "python train.py debug=fdr": ["test_train.py::test_train_py_fast_dev_run"],
    "python train.py -m model=resnet18,efficientnet_b0 model.optimizer.lr=1e-4,3e-4": [
        "test_train.py::test_multirun_gives_one_directory_and_one_tensorboard_run_per_job",
        "test_sweeps.py::test_a_failed_job_is_a_row_and_the_sweep_goes_on",
    ],
    "python train.py ckpt_path=outputs/train/runs/<id>/checkpoints/last.ckpt": [
        "test_train.py::test_resume_continues_the_run_at_the_next_epoch",
        "test_reproducibility.py::test_resume_after_sigkill_mid_epoch_reproduces_the_uninterrupted_run",
    ],
    "python train.py -m data.folds=5 'data.fold=range(5)' [experiment=...]": [
        "test_combinations.py::test_cross_validation_sweep_eval_and_checkpoints_feed_compare",
    ],
    "python train.py -m seed=1,2,3 model=resnet18,efficientnet_b0": [
        "test_combinations.py::test_a_seed_sweep_summarises_each_configuration",
    ],
    "python compare.py inputs=[A,B]": [
        "test_combinations.py::test_cross_validation_sweep_eval_and_checkpoints_feed_compare",
    ],
    "python train.py optimized_metric=val/loss": [
        "test_numbers.py::test_val_loss_as_optimized_metric_keeps_the_lowest_loss",
    ],
    "python train.py hparams_search=optuna": ["test_sweeps.py::test_optuna_search_resumes_after_being_stopped"],
    "python train.py -m hydra/launcher=slurm hydra.launcher.partition=gpu trainer=ddp ...": [
        "test_sweeps.py::test_submitit_local_launcher",  # the same submitit launcher, without a cluster
    ],
    "python train.py trainer=ddp": [
        "test_sweeps.py::test_ddp_on_two_cpu_processes_writes_one_run_directory",  # trainer=ddp_sim: no GPUs here
        "test_sweeps.py::test_ddp_counts_every_image_once_and_matches_single_process_eval",
    ],
    "tensorboard --logdir outputs": ["test_combinations.py::test_documented_commands_run_as_typed"],
    "python train.py --cfg job": ["test_combinations.py::test_documented_commands_run_as_typed"],
    "python train.py data.augment=robust": ["test_evaluation.py::test_robust_augmentation_trains"],
    "python eval.py ckpt_path=<run>/checkpoints/<best>.ckpt": [
        "test_combinations.py::test_cross_validation_sweep_eval_and_checkpoints_feed_compare",
        "test_evaluation.py::test_eval_on_a_trained_checkpoint",
    ],
    "python predict.py ckpt_path=... input=PATH": [
        "test_evaluation.py::test_predict_names_bad_files_and_scores_the_rest",
        "test_combinations.py::test_predict_and_serve_give_every_image_the_same_verdict",
    ],
    "python export.py ckpt_path=...": [
        "test_combinations.py::test_documented_commands_run_as_typed",
        "test_evaluation.py::test_onnx_export_matches_pytorch_on_real_images",
    ],
    "python export.py ckpt_path=... format=hf": [
        "test_familiarity.py::test_hf_export_loads_in_timm_and_its_onnx_returns_the_familiarity",
        "test_combinations.py::test_shared_benchmark_with_an_added_source",
    ],
    "python prepare_data.py": ["test_prepare.py::test_prepare_data_py_as_a_user_runs_it"],
    "python prepare_data.py source=hf": ["test_prepare.py::test_hf_reduction_equals_the_original_script"],
    "python prepare_data.py source=aligned real=FOLDER": [
        "test_aligned.py::test_prepare_data_py_source_aligned",
        "test_aligned.py::test_aligned_benchmark_pairs_the_rows_that_hold_pairs_and_compares_them_with_the_baseline",
    ],
    "python benchmark.py benchmark=shared_aligned experiment=aligned_lite0_native": [
        "test_aligned.py::test_aligned_benchmark_pairs_the_rows_that_hold_pairs_and_compares_them_with_the_baseline"
    ],
    "python train.py 'data.root={a: PATH1, b: PATH2}'": ["test_sources.py::test_training_on_two_sources_reports_each"],
    "python calibrate.py ckpt_path=<run>/checkpoints/<best>.ckpt data.root=FOLDER": [
        "test_calibration.py::test_calibrate_py_says_where_a_detector_works_and_writes_a_detector_calibrated_there",
        "test_familiarity.py::test_every_checkpoint_train_leaves_decides_at_once_and_an_uncalibrated_one_is_refused",
    ],
    "python benchmark.py benchmark=shared recalibrate=true": [
        "test_benchmark.py::test_benchmark_matrix_with_leave_one_out"
    ],
    "python benchmark.py benchmark=shared [experiment=transfer_npr]": [
        "test_combinations.py::test_shared_benchmark_with_an_added_source",
        "test_benchmark.py::test_benchmark_matrix_with_leave_one_out",
        "test_benchmark.py::test_benchmark_folds_pool_out_of_fold_in_source_and_average_the_rest",
    ],
    "python train.py model=npr data.resize=none": [
        "test_recipes.py::test_recipe_model_trains_evaluates_predicts_and_exports"
    ],
    "python serve.py ckpt_path=<run>/checkpoints/<best>.ckpt": [
        "test_serve_hostile.py::test_serve_py_stops_gracefully_with_status_0",
        "test_serve.py::test_page_in_a_real_browser",
    ],
    "python audit_data.py data.root=PATH": ["test_combinations.py::test_documented_commands_run_as_typed"],
}


PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documented_commands(page: Path) -> list[str]:
    """The commands of a page's tables: rows whose first cell is a command in backquotes."""
    return re.findall(r"^\| `((?:python|tensorboard|torchrun)[^`]*)` \|", page.read_text(), flags=re.MULTILINE)


def readme_commands() -> list[str]:
    return sorted({c for page in PAGES for c in documented_commands(page)})


def test_the_readme_is_a_front_door():
    text = (REPO / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 250, len(lines)
    assert "python train.py experiment=real_vs_ai_lite0" in "\n".join(lines[:60])  # the run that works offline
    assert len(documented_commands(REPO / "README.md")) >= 20  # the commands table was found
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / link).is_file(), link
    for page in PAGES[1:]:  # the pages link to files that exist
        for link in re.findall(r"\]\(([^)#:]+\.(?:md|png))", page.read_text()):
            assert (page.parent / link).is_file(), f"{page.name}: {link}"


def test_every_readme_command_is_run_by_a_test_that_exists():
    commands = readme_commands()
    assert len(commands) >= 20  # the tables were found
    missing = [c for c in commands if c not in COMMAND_TESTS]
    assert not missing, f"README commands that no test runs (add them to COMMAND_TESTS): {missing}"
    stale = [c for c in COMMAND_TESTS if c not in commands]
    assert not stale, f"COMMAND_TESTS names commands the README no longer has: {stale}"
    for command, tests in COMMAND_TESTS.items():
        for test in tests:
            module, name = test.split("::")
            tree = ast.parse((REPO / "tests" / module).read_text())
            names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            assert name in names, f"{command}: {test} does not exist"
