"""Hostile command-line values: numbers are checked like task keys, outputs that are files are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.hostile._harness import assert_refused, assert_unchanged, mednas_cli, snapshot


@pytest.fixture()
def task_file(tmp_path: Path, tiny_cls_datalist: Path) -> Path:
    from mednas.testing import tiny_task

    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(tiny_task("classification", tiny_cls_datalist)))
    return path


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--n-trials", "-1"),
        ("--n-trials", "0"),
        ("--timeout", "0"),
        ("--timeout", "nan"),
        ("--workers", "0"),
        ("--trials-per-gpu", "-3"),
    ],
)
def test_search_numbers(tmp_path: Path, task_file: Path, flag: str, value: str) -> None:
    before = snapshot(tmp_path)
    assert_refused(mednas_cli("search", task_file, flag, value, "--run-dir", tmp_path / "run"), flag, code=2)
    assert_unchanged(before, tmp_path)


@pytest.mark.parametrize(("flag", "value"), [("--top-k", "0"), ("--seeds", "0"), ("--epochs", "-5")])
def test_retrain_numbers(tmp_path: Path, flag: str, value: str) -> None:
    assert_refused(mednas_cli("retrain", tmp_path, flag, value), flag, code=2)


def test_calibrate_specs_and_run_dir_file(tmp_path: Path, task_file: Path) -> None:
    assert_refused(mednas_cli("calibrate-proxy", task_file, "--specs", "1"), "--specs", code=2)
    existing = tmp_path / "calibration"
    existing.write_text("mine")
    assert_refused(
        mednas_cli("calibrate-proxy", task_file, "--run-dir", existing), "--run-dir", str(existing), code=2
    )
    assert existing.read_text() == "mine"


def test_report_cases_zero(tmp_path: Path) -> None:
    assert_refused(mednas_cli("report", tmp_path, "--cases", "0"), "--cases", code=2)


def test_set_override_validated_like_task(task_file: Path) -> None:
    assert_refused(
        mednas_cli("validate", task_file, "--set", "search.n_trials=-1"), "search.n_trials", code=2
    )


@pytest.mark.parametrize("command", ["predict", "export"])
def test_out_existing_file(tmp_path: Path, command: str) -> None:
    out = tmp_path / "results"
    out.write_text("an earlier result")
    args = (
        ["predict", tmp_path / "bundle", tmp_path / "x.nii.gz"]
        if command == "predict"
        else ["export", tmp_path]
    )
    before = snapshot(tmp_path)
    assert_refused(mednas_cli(*args, "--out", out), "--out", str(out), code=2)
    assert_unchanged(before, tmp_path)


def test_report_out_is_folder_or_under_file(tmp_path: Path) -> None:
    assert_refused(mednas_cli("report", tmp_path, "--out", tmp_path), "--out", code=2)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_refused(
        mednas_cli("report", tmp_path, "--out", blocker / "report.html"), "--out", str(blocker), code=2
    )
    assert blocker.read_text() == "x"
