"""Full-fidelity retraining on tiny data: candidate choice, run-directory records, one test evaluation at the
validation threshold, skipping finished candidates, resuming an interrupted one, the low-fidelity warning."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from mednas import api
from mednas.spec import ArchSpec, build

CONTRACT_FILES = {"spec.json", "metrics.json", "model.pt", "log.txt", "predictions.json"}


def test_top_k_follows_the_proxy_ranking(retrained: SimpleNamespace) -> None:
    import optuna

    from mednas.study import best_trials

    study = optuna.load_study(study_name="tiny-cls", storage=f"sqlite:///{retrained.run_dir / 'study.db'}")
    expected = [t.number for t in best_trials(study, 3)]
    summary = retrained.result.summary
    assert summary["retrain"]["candidates"] == expected == [c["trial"] for c in retrained.result.candidates]
    assert summary["retrain"]["top_k"] == 3 and summary["retrain"]["shape"] == [32, 32]
    assert summary["retrain"]["best"] in expected


def test_files_follow_the_run_directory_contract(retrained: SimpleNamespace) -> None:
    for n in retrained.result.summary["retrain"]["candidates"]:
        cdir = retrained.run_dir / "retrain" / str(n)
        assert {p.name for p in cdir.iterdir()} == CONTRACT_FILES | {
            "seed-1"
        }  # the checkpoint is gone once complete
        assert {
            p.name for p in (cdir / "seed-1").iterdir()
        } == CONTRACT_FILES  # the second seed, same contract
        spec = ArchSpec.from_dict(json.loads((cdir / "spec.json").read_text()))
        net = build(spec)
        net.load_state_dict(torch.load(cdir / "model.pt", weights_only=True))
        rec = json.loads((cdir / "metrics.json").read_text())
        assert rec["trial"] == n and rec["state"] == "complete" and rec["reason"] is None
        # Versioned like the trial records: a later mednas can tell what it reads.
        assert isinstance(rec["schema_version"], int) and rec["schema_version"] >= 1
        assert (
            json.loads((cdir / "seed-1" / "metrics.json").read_text())["schema_version"]
            == rec["schema_version"]
        )
        assert (
            rec["shape"] == [32, 32]
            and rec["patch"] is None
            and rec["params"] == sum(p.numel() for p in net.parameters())
        )
        assert rec["preprocessing"]["problem"] == "classification" and rec["preprocessing"]["n_classes"] == 2
        assert (
            rec["loss"] == "weighted_ce" and rec["sampling"] == "uniform"
        )  # the task's auto, resolved: none searched
        proxy = json.loads((retrained.run_dir / "trials" / str(n) / "metrics.json").read_text())
        assert rec["proxy"]["value"] == pytest.approx(proxy["objective"]["value"])
        assert isinstance(rec["val"]["objective"], float) and "objective" in rec["val"]["metrics"]
        assert "threshold" in rec["operating_point"]  # null when no validation case could be called positive
        for m in rec["test"]["metrics"].values():
            assert len(m["ci95"]) == 2
        assert rec["epochs"] == len(rec["history"]) <= 3 and 1 <= rec["best_epoch"] <= rec["epochs"]
        assert rec["seed"] > 0 and rec["seconds"] > 0 and isinstance(rec["learned"], bool)
        assert "retraining trial" in (cdir / "log.txt").read_text()


def test_retrain_calibrates_and_writes_per_case_predictions(retrained: SimpleNamespace) -> None:
    from mednas.metrics import expected_calibration_error

    splits = retrained.splits
    for n in retrained.result.summary["retrain"]["candidates"]:
        cdir = retrained.run_dir / "retrain" / str(n)
        rec = json.loads((cdir / "metrics.json").read_text())
        cal = rec["calibration"]
        assert rec["temperature"] == cal["temperature"] > 0 and cal["fitted_on"] == "validation"
        assert (rec["ece_before"], rec["ece_after"]) == (cal["ece_before"], cal["ece_after"])
        assert cal["nll_after"] <= cal["nll_before"] + 1e-9 and isinstance(cal["warnings"], list)
        assert cal["n_cases"] == len(_split_keys(splits, "val"))
        preds = json.loads((cdir / "predictions.json").read_text())
        assert set(preds) == {"val", "test"}
        for split in ("val", "test"):
            p = preds[split]
            assert p["split"] == split and sorted(p["cases"]) == sorted(_split_keys(splits, split))
            assert all(c.startswith("c-") for c in p["cases"])  # salted hashes, never identifiers
            assert len(p["labels"]) == len(p["probabilities"]) == len(p["cases"])
            assert np.allclose(np.sum(p["probabilities"], axis=1), 1.0, atol=1e-5)
        # The stored validation probabilities are the calibrated ones (their ECE is the one recorded after).
        stored = np.asarray(preds["val"]["probabilities"])
        assert expected_calibration_error(np.asarray(preds["val"]["finding"]), stored[:, 1]) == pytest.approx(
            cal["ece_after"], abs=1e-5
        )
        if cal["temperature"] >= 19.9:  # five validation cases: a flat likelihood, warned about
            assert any("edge of its range" in w for w in cal["warnings"])
        # The operating point was chosen on the calibrated scores: it reproduces on them.
        op = rec["operating_point"]
        if op.get("threshold") is not None and op.get("sensitivity") is not None:
            truth = np.asarray(preds["val"]["finding"])
            called = np.asarray(preds["val"]["scores"]) >= op["threshold"]
            if truth.any():
                assert called[truth == 1].mean() == pytest.approx(op["sensitivity"], abs=1e-6)


def _split_keys(splits: dict[str, Any], split: str) -> list[str]:
    s = splits.get("splits", splits)[split]
    return [
        c if isinstance(c, str) else c.get("key") for c in (s if isinstance(s, list) else s.get("cases", []))
    ]


def test_summary_holds_retrain_and_fidelity(retrained: SimpleNamespace) -> None:
    on_disk = json.loads((retrained.run_dir / "summary.json").read_text())
    assert on_disk == retrained.result.summary
    fid = on_disk["proxy_fidelity"]
    assert {"kendall_tau", "spearman", "top1_regret", "n", "warning"} <= set(fid)
    assert on_disk["best"] == retrained.search.summary["best"]  # the search's keys survive the merge


def test_retrain_keys_survive_a_search_rewriting_the_summary_meanwhile(
    retrained: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """summary.json has two writers: a search worker still running in the directory rewrites its keys while
    retrain adds ``retrain``/``proxy_fidelity``. Each update holds the summary's lock from its read to its write,
    so neither loses the other's keys, whichever order they come in."""
    import shutil
    import threading

    import mednas.retraining._retrain as retrain_mod
    from mednas.rundir import RunDir

    run_dir = Path(shutil.copytree(retrained.run_dir, tmp_path / "run"))  # retrained: a re-run only skips
    rd = RunDir(run_dir)
    rd.update_summary(retrain=None, proxy_fidelity=None)
    ready, read = threading.Event(), threading.Event()
    real_fidelity = retrain_mod._fidelity

    def fidelity_then_signal(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        out = real_fidelity(*a, **kw)
        ready.set()  # retrain is about to update the summary
        return out

    def search_rewrites(summary: dict[str, Any]) -> dict[str, Any]:
        read.set()
        assert ready.wait(60)
        time.sleep(0.3)  # retrain now waits for the lock (without one, it would write now and be overwritten)
        return {**summary, "n_trials": 99}  # the search's keys, on the summary as it read it

    monkeypatch.setattr(retrain_mod, "_fidelity", fidelity_then_signal)
    search = threading.Thread(target=rd.update_summary, args=(search_rewrites,))
    search.start()
    assert read.wait(30)  # the search has read the summary (no retrain key yet) and holds it
    result = api.retrain(run_dir, top_k=3, n_resamples=100, show_progress=False)
    search.join(60)
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["n_trials"] == 99 and on_disk["retrain"] == result.summary["retrain"]
    assert on_disk["proxy_fidelity"] == result.fidelity and on_disk == result.summary

    # And the other way round: the search rewrites after retrain; retrain's keys stay.
    rd.update_summary(lambda s: {**s, "n_trials": 100})
    after = json.loads((run_dir / "summary.json").read_text())
    assert after["n_trials"] == 100 and after["retrain"] == result.summary["retrain"]


def test_test_split_is_evaluated_once_at_the_validation_threshold(retrained: SimpleNamespace) -> None:
    test_keys = set(retrained.splits["test"])
    test_loads = [keys for keys in retrained.loads if set(keys) & test_keys]
    assert len(test_loads) == 1 and set(test_loads[0]) == test_keys  # read once, for all candidates
    on_test = [r for r in retrained.reports if set(r["keys"]) == test_keys]
    on_val = [r for r in retrained.reports if set(r["keys"]) == set(retrained.splits["val"])]
    assert (
        len(on_test) == len(on_val) == 6
    )  # one validation report and one test evaluation per candidate and seed
    # Seed-major order: the first three are each candidate's first seed, whose record the candidate's is.
    for rec, test_call, val_call in zip(retrained.result.candidates, on_test[:3], on_val[:3]):
        assert val_call.get("threshold") is None  # the operating point is chosen on validation ...
        assert test_call["threshold"] is not None
        assert test_call["threshold"] == pytest.approx(
            rec["operating_point"]["threshold"]
        )  # ... and applied to test
        assert rec["test"]["operating_point"]["threshold"] == pytest.approx(
            rec["operating_point"]["threshold"]
        )


def test_rerun_skips_finished_candidates(retrained: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    import mednas.retraining._retrain as retrain_mod

    def no_training(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a finished candidate was trained again")

    monkeypatch.setattr(retrain_mod, "train_candidate", no_training)
    before = {
        n: (retrained.run_dir / "retrain" / str(n) / "metrics.json").read_text()
        for n in retrained.result.summary["retrain"]["candidates"]
    }
    again = api.retrain(retrained.run_dir, top_k=3, n_resamples=100, show_progress=False)
    assert [c["trial"] for c in again.candidates] == list(before)
    for n, text in before.items():
        assert (retrained.run_dir / "retrain" / str(n) / "metrics.json").read_text() == text


def test_interrupted_candidate_resumes_from_its_checkpoint(
    searched_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mednas.retraining._retrain as retrain_mod

    run_dir = searched_copy
    seen: list[int] = []
    real_epoch = retrain_mod._Progress.epoch

    def interrupt(self, epoch, epochs, value):  # noqa: ANN001, ANN202
        seen.append(epoch)
        if "candidate 2/" in self.detail and epoch == 3:
            raise KeyboardInterrupt  # what Ctrl-C does mid-candidate; SIGKILL is tested through the CLI
        real_epoch(self, epoch, epochs, value)

    monkeypatch.setattr(retrain_mod._Progress, "epoch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        api.retrain(run_dir, top_k=2, epochs=6, n_resamples=50, seeds=1, show_progress=False)
    first = json.loads((run_dir / "summary.json").read_text())["best"]["trial"]
    cands = sorted(p.name for p in (run_dir / "retrain").iterdir())
    assert len(cands) == 2
    done = json.loads((run_dir / "retrain" / str(first) / "metrics.json").read_text())
    assert done["state"] == "complete"
    second = next(int(c) for c in cands if int(c) != first)
    assert (run_dir / "retrain" / str(second) / "checkpoint.pt").exists()
    assert json.loads((run_dir / "retrain" / str(second) / "metrics.json").read_text())["state"] == "running"

    seen.clear()
    calls: list[int] = []
    real_fit = retrain_mod.train_candidate

    def counting_fit(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return real_fit(*a, **kw)

    monkeypatch.setattr(retrain_mod, "train_candidate", counting_fit)
    result = api.retrain(run_dir, top_k=2, epochs=6, n_resamples=50, seeds=1, show_progress=False)
    assert len(calls) == 1  # the finished candidate was skipped
    assert seen == [4, 5, 6]  # the interrupted one continued after its last checkpointed epoch
    rec = json.loads((run_dir / "retrain" / str(second) / "metrics.json").read_text())
    assert rec["state"] == "complete" and [h["epoch"] for h in rec["history"]] == [1, 2, 3, 4, 5, 6]
    assert not (run_dir / "retrain" / str(second) / "checkpoint.pt").exists()
    assert "resuming trial" in (run_dir / "retrain" / str(second) / "log.txt").read_text()
    assert result.summary["retrain"]["candidates"] == [first, second]


def _fake_fit(values: dict[int, float]):  # noqa: ANN202
    """A stand-in for full training: builds the net, returns chosen validation objectives, trains nothing."""
    from mednas.train import EpochResult, FitResult, FitSettings, TrainedCandidate, predict, space_for

    def fake(task, spec, train, val, fidelity, *, seed, device, checkpoint=None, on_epoch=None, **_):  # noqa: ANN001, ANN003, ANN202
        space = space_for(task, spec.family)
        adapted = space.adapt_to_shape(spec, fidelity.net_shape)
        divisor = tuple(space.required_divisor(adapted))
        model = build(adapted)
        outputs = predict(
            model, val.images, problem=task.problem, batch_size=8, device="cpu", divisor=divisor
        )
        value = values[seed]
        history = [EpochResult(1, 1.0, value * 0.5, {}, 0.01), EpochResult(2, 0.5, value, {}, 0.01)]
        result = FitResult(
            2, value, {}, history, 0.02, True, best_state=model.state_dict(), best_outputs=outputs
        )
        settings = FitSettings(task.problem, task.n_classes, fidelity.epochs, 8, seed=seed, divisor=divisor)
        return TrainedCandidate(result, model, adapted, settings)

    return fake


def test_low_fidelity_is_warned_stored_and_printed(
    searched_copy: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import mednas.retraining._retrain as retrain_mod
    from mednas.cli import _print_retrain
    from mednas.train import derive_seed

    run_dir = searched_copy
    real_select = retrain_mod.select_candidates
    values: dict[int, float] = {}

    def with_proxy_scores(study, k):  # noqa: ANN001, ANN202
        # Distinct proxy scores, best first, as the search ranks them; full-fidelity scores in the opposite
        # order (keyed by the candidate's derived seed, which the fake training sees): the proxy is exactly wrong.
        trials = real_select(study, k)
        for i, t in enumerate(trials):
            values[derive_seed(0, t.number)] = 0.5 + 0.1 * i
        return [
            SimpleNamespace(
                number=t.number, values=[0.9 - 0.1 * i], user_attrs={"learned": True}, params=t.params
            )
            for i, t in enumerate(trials)
        ]

    monkeypatch.setattr(retrain_mod, "select_candidates", with_proxy_scores)
    monkeypatch.setattr(retrain_mod, "train_candidate", _fake_fit(values))
    with caplog.at_level(logging.WARNING, logger="mednas"):
        result = api.retrain(run_dir, top_k=3, n_resamples=50, seeds=1, show_progress=False)
    fid = result.fidelity
    assert (
        fid["n"] == 3 and fid["kendall_tau"] == pytest.approx(-1.0) and fid["spearman"] == pytest.approx(-1.0)
    )
    assert fid["top1_regret"] == pytest.approx(0.2)
    assert fid["warning"] and "calibrate-proxy" in fid["warning"]
    assert result.summary["retrain"]["best"] == result.candidates[-1]["trial"]
    assert any("low proxy fidelity" in r.getMessage() for r in caplog.records)
    assert json.loads((run_dir / "summary.json").read_text())["proxy_fidelity"]["warning"] == fid["warning"]
    _print_retrain(result)
    out = capsys.readouterr().out
    assert "WARNING: low proxy fidelity" in out and "Kendall tau" in out and "not measured on this run" in out
    assert "full val (95% CI)" in out and "test (95% CI)" in out
    assert fid["seeds"] == 1 and fid["seed_ceiling_tau"] is None and "--seeds 2" in fid["seed_ceiling_reason"]


def test_two_seeds_give_the_ceiling_seed_mean_tau_top3_and_regret(
    searched_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mednas.retraining._retrain as retrain_mod
    from mednas.cli import _print_retrain
    from mednas.train import derive_seed

    run_dir = searched_copy
    real_select = retrain_mod.select_candidates
    values: dict[int, float] = {}
    by_seed = [[0.5, 0.6, 0.7], [0.55, 0.7, 0.65]]  # candidates in proxy order; seeds agree on 2 of 3 pairs

    def with_proxy_scores(study, k):  # noqa: ANN001, ANN202
        trials = real_select(study, k)
        for i, t in enumerate(trials):
            values[derive_seed(0, t.number)] = by_seed[0][i]
            values[derive_seed(0, t.number, 1)] = by_seed[1][i]
        return [
            SimpleNamespace(
                number=t.number, values=[0.9 - 0.1 * i], user_attrs={"learned": True}, params=t.params
            )
            for i, t in enumerate(trials)
        ]

    monkeypatch.setattr(retrain_mod, "select_candidates", with_proxy_scores)
    monkeypatch.setattr(retrain_mod, "train_candidate", _fake_fit(values))
    result = api.retrain(run_dir, top_k=3, n_resamples=50, seeds=2, show_progress=False)
    fid = result.fidelity
    assert fid["seeds"] == 2
    assert fid["seed_ceiling_tau"] == pytest.approx(1 / 3)  # seed 1 against seed 2
    assert fid["kendall_tau"] == pytest.approx(-1.0)  # proxy against the seed means 0.525, 0.65, 0.675
    assert fid["tau_over_ceiling"] == pytest.approx(-3.0)
    assert fid["top1_regret"] == pytest.approx(0.15)
    assert fid["seed_sd"] == pytest.approx((0.05 + 0.1 + 0.05) / 3 / 2**0.5)
    assert (
        fid["regret_in_seed_sd"] == pytest.approx(0.15 / fid["seed_sd"])
        and fid["regret_within_seed_noise"] is False
    )
    assert fid["top3_contains_best"] is True and "trivially" in fid["top3_note"]
    assert "full training agrees with itself across seeds at tau 0.33" in fid["warning"]
    first, last = result.candidates[0], result.candidates[-1]
    assert [s["val"] for s in first["seeds"]] == pytest.approx([0.5, 0.55]) and first[
        "val_mean"
    ] == pytest.approx(0.525)
    assert (
        result.summary["retrain"]["best"] == last["trial"]
    )  # by seed mean (0.675), not by seed 1's best (0.7)
    assert (
        result.summary["retrain"]["seeds"] == 2 and result.summary["retrain"]["cost"]["full_trainings"] == 6
    )
    seed1 = json.loads((run_dir / "retrain" / str(first["trial"]) / "seed-1" / "metrics.json").read_text())
    assert (
        seed1["seed_index"] == 1
        and seed1["seed"] == derive_seed(0, first["trial"], 1)
        and seed1["state"] == "complete"
    )
    on_disk = json.loads((run_dir / "retrain" / str(first["trial"]) / "metrics.json").read_text())
    assert on_disk["val_mean"] == pytest.approx(0.525) and len(on_disk["seeds"]) == 2
    _print_retrain(result)
    out = capsys.readouterr().out
    assert "seed-noise ceiling" in out and "tau 0.33" in out and "seed mean +- sd" in out


def test_selection_skips_duplicates_and_uses_the_pareto_front() -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import create_trial

    from mednas.retraining import select_candidates

    dist = {"family": CategoricalDistribution(["resnet"])}

    def add(study: Any, values: list[float], **attrs: Any) -> None:
        study.add_trial(
            create_trial(
                values=values,
                params={"family": "resnet"},
                distributions=dist,
                user_attrs={"learned": True, **attrs},
            )
        )

    single = optuna.create_study(direction="maximize")
    add(single, [0.7], spec_hash="a")
    add(single, [0.9], spec_hash="b")
    add(single, [0.9], spec_hash="b", duplicate_of=1)  # same architecture as trial 1: retrained once
    add(single, [0.95], spec_hash="c", learned=False)  # never learned: ranked last
    add(single, [0.8], spec_hash="d")
    assert [t.number for t in select_candidates(single, 3)] == [1, 4, 0]
    assert [t.number for t in select_candidates(single, 10)] == [1, 4, 0, 3]

    multi = optuna.create_study(directions=["maximize", "minimize"])
    add(multi, [0.9, 100.0], spec_hash="a")  # front
    add(multi, [0.8, 10.0], spec_hash="b")  # front
    add(multi, [0.7, 50.0], spec_hash="c")  # dominated by 1
    add(multi, [0.85, 20.0], spec_hash="d")  # front
    assert [t.number for t in select_candidates(multi, 5)] == [0, 3, 1]
    assert [t.number for t in select_candidates(multi, 2)] == [0, 3]


def test_missing_run_directory_is_a_one_line_error(tmp_path: Path) -> None:
    from mednas.errors import RunDirError

    with pytest.raises(RunDirError, match="not a run directory"):
        api.retrain(tmp_path / "nothing", show_progress=False)


def test_seeds_are_derived_and_recorded(retrained: SimpleNamespace) -> None:
    from mednas.train import derive_seed

    for rec in retrained.result.candidates:
        assert rec["seed"] == derive_seed(0, rec["trial"])
        assert [s["seed"] for s in rec["seeds"]] == [rec["seed"], derive_seed(0, rec["trial"], 1)]
        assert rec["val_mean"] == pytest.approx(np.mean([s["val"] for s in rec["seeds"]]))
    assert np.isfinite([c["val"]["objective"] for c in retrained.result.candidates]).all()
    fid = retrained.result.fidelity
    assert fid["seeds"] == 2 and {
        "seed_ceiling_tau",
        "kendall_tau",
        "top3_contains_best",
        "top1_regret",
        "regret_in_seed_sd",
    } <= set(fid)


def test_mednas_retrain_is_a_function_after_its_package_is_imported(tmp_path: Path) -> None:
    import inspect

    import mednas
    import mednas.retraining  # a package named apart from the verb: importing it hides nothing

    assert inspect.isfunction(mednas.retrain) and "top_k" in inspect.signature(mednas.retrain).parameters
    from mednas.errors import RunDirError

    with pytest.raises(RunDirError, match="not a run directory"):
        mednas.retrain(tmp_path / "nothing", show_progress=False)


def test_a_dead_candidate_is_flagged_in_its_trial_and_left_out_of_fidelity(
    tmp_path: Path, tiny_cls_datalist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network whose output is dead (always 0) is flagged by the search and excluded from tau and regret."""
    import mednas.retraining._retrain as retrain_mod
    import mednas.spec
    from mednas.testing import tiny_task
    from mednas.train import derive_seed

    class Dead(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x) * 0.0

    real_build, built = mednas.spec.build, []

    def second_is_dead(spec):  # noqa: ANN001, ANN202
        built.append(spec)
        return Dead(real_build(spec)) if len(built) == 2 else real_build(spec)

    task = tiny_task(
        "classification",
        tiny_cls_datalist,
        search={"n_trials": 3, "pruner": {"name": "none"}, "dead_check_epoch": 0},
        training={"shape": [32, 32], "batch_size": 8, "epochs": 3, "patience": 500, "augment": False},
    )
    with monkeypatch.context() as mp:
        mp.setattr(mednas.spec, "build", second_is_dead)
        api.search(task, run_dir=tmp_path / "run", show_progress=False)
    records = {
        n: json.loads((tmp_path / "run" / "trials" / str(n) / "metrics.json").read_text()) for n in range(3)
    }
    dead = [n for n, r in records.items() if r.get("learned") is False]
    assert len(dead) == 1 and "predictions constant" in records[dead[0]]["not_learning"]

    values: dict[int, float] = {}
    for n in range(3):  # full-fidelity scores: the dead trial would be the best if it were ranked
        for k in range(2):
            values[derive_seed(0, n) if k == 0 else derive_seed(0, n, k)] = (
                0.99 if n == dead[0] else 0.5 + 0.1 * n + 0.01 * k
            )
    monkeypatch.setattr(retrain_mod, "train_candidate", _fake_fit(values))
    fid = api.retrain(tmp_path / "run", top_k=3, n_resamples=20, seeds=2, show_progress=False).fidelity
    assert fid["n_candidates"] == 3 and fid["n_not_learning"] == 1 and fid["not_learning"] == dead
    assert fid["n"] == 2  # tau over the two that learned (null with its reason: fewer than 3)
    assert (
        fid["best_full_trial"] != dead[0] and fid["top1_trial"] != dead[0]
    )  # no regret against a dead network
