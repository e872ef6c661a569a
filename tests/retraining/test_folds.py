"""Cross-validated retraining (``mednas retrain RUN --folds K``): patient-grouped folds over train+val, per-fold
scores with the fold mean and its t interval, the candidate chosen by the fold mean, and the test split read once
and evaluated once per final model (the chosen candidate's fold models and their ensemble)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mednas import api
from mednas.cli import main
from mednas.errors import ConfigError
from mednas.retraining import t_interval

K = 3


@pytest.fixture(scope="module")
def folded(tmp_path_factory: pytest.TempPathFactory, searched: SimpleNamespace) -> SimpleNamespace:
    """The tiny search retrained top-2 with 3 folds (1 epoch), with spies on test reads and evaluations."""
    import mednas.data._plan as plan_mod
    import mednas.metrics._objective as objective_mod

    run_dir = Path(shutil.copytree(searched.run_dir, tmp_path_factory.mktemp("folded") / "run"))
    splits = json.loads((run_dir / "splits.json").read_text())
    loads: list[list[str]] = []
    reports: list[list[str]] = []
    real_load, real_report = plan_mod.load_arrays, objective_mod.objective_report

    def spy_load(cases, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        loads.append([c.key for c in cases])
        return real_load(cases, *a, **kw)

    def spy_report(task, outputs, data, **kw):  # noqa: ANN001, ANN003, ANN202
        reports.append(list(data.keys))
        return real_report(task, outputs, data, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plan_mod, "load_arrays", spy_load)
        mp.setattr(objective_mod, "objective_report", spy_report)
        result = api.retrain(run_dir, top_k=2, folds=K, epochs=1, n_resamples=50, show_progress=False)
    return SimpleNamespace(run_dir=run_dir, result=result, splits=splits, loads=loads, reports=reports)


def test_folds_partition_train_and_val_patients(folded: SimpleNamespace) -> None:
    record = json.loads((folded.run_dir / "retrain" / "folds.json").read_text())
    keys = [k for f in record["folds"] for k in f["cases"]]
    assert record["k"] == K and len(record["folds"]) == K
    assert sorted(keys) == sorted(folded.splits["train"] + folded.splits["val"])  # every case once
    assert not set(keys) & set(folded.splits["test"])  # test untouched
    assert all(f["n_patients"] >= 1 for f in record["folds"])


def test_per_fold_scores_mean_and_interval(folded: SimpleNamespace) -> None:
    result = folded.result
    assert result.folds == K and len(result.candidates) == 2
    for c in result.candidates:
        values = [f["val"] for f in c["folds"]]
        assert len(values) == K and all(isinstance(v, float) for v in values)
        stats = t_interval(values)
        assert c["val_mean"] == pytest.approx(sum(values) / K)
        assert c["val_sd"] == pytest.approx(stats["sd"])
        if c["val_sd"]:
            assert c["val_ci95"][0] < c["val_mean"] < c["val_ci95"][1]
        for i in range(K):
            rec = json.loads(
                (folded.run_dir / "retrain" / str(c["trial"]) / f"fold-{i}" / "metrics.json").read_text()
            )
            assert rec["fold"] == i and rec["state"] == "complete" and rec["val"]["objective"] == values[i]
    summary = result.summary["retrain"]
    assert summary["folds"] == K and [r["fold_values"] for r in summary["results"]] == [
        [f["val"] for f in c["folds"]] for c in result.candidates
    ]
    best = max(result.candidates, key=lambda c: (c["learned"], c["val_mean"]))
    assert summary["best"] == best["trial"] == result.ensemble["trial"]


def test_test_split_read_once_and_evaluated_once_per_final_model(folded: SimpleNamespace) -> None:
    test = set(folded.splits["test"])
    assert sum(1 for keys in folded.loads if set(keys) & test) == 1  # one read of the test split
    test_reports = [keys for keys in folded.reports if set(keys) & test]
    assert len(test_reports) == K + 1  # each fold model of the chosen candidate, and the ensemble
    assert all(set(keys) == test for keys in test_reports)
    chosen = folded.result.ensemble["trial"]
    for c in folded.result.candidates:
        for i in range(K):
            rec = json.loads(
                (folded.run_dir / "retrain" / str(c["trial"]) / f"fold-{i}" / "metrics.json").read_text()
            )
            assert (rec["test"] is not None) == (c["trial"] == chosen)
    ens = json.loads((folded.run_dir / "retrain" / "ensemble.json").read_text())
    assert ens["k"] == K and "objective" in ens["test"]["metrics"]
    assert ens["val"]["n_cases"] == len(folded.splits["train"]) + len(folded.splits["val"])


def test_cli_prints_folds_and_skips_finished_trainings(
    folded: SimpleNamespace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mednas.train as train_mod

    def no_training(*a: Any, **kw: Any) -> None:
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(train_mod, "fit", no_training)
    assert (
        main(["--quiet", "retrain", str(folded.run_dir), "--top-k", "2", "--folds", str(K), "--epochs", "1"])
        == 0
    )
    out = capsys.readouterr().out
    assert f"--folds {K}" in out and "fold mean" in out and "95% t interval" in out
    c = folded.result.candidates[0]
    assert ", ".join(f"{f['val']:.3f}" for f in c["folds"]) in out
    assert "ensemble of 3 fold models" in out and "best member" in out


@pytest.mark.parametrize("folds", [1, 99])
def test_bad_fold_counts_are_one_line_errors(searched_copy: Path, folds: int) -> None:
    with pytest.raises(ConfigError, match="--folds") as err:
        api.retrain(searched_copy, top_k=1, folds=folds, epochs=1, show_progress=False)
    assert "\n" not in str(err.value)
    assert not (searched_copy / "retrain" / "folds.json").exists()
