"""End-to-end proxy search on tiny data: run directory, summary, continuation, failures, budgets, test split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mednas import api
from mednas.errors import RunDirError
from mednas.spec import ArchSpec, build
from mednas.testing import tiny_task


def _search(task: dict, run_dir: Path, **kw):  # noqa: ANN202
    return api.search(task, run_dir=run_dir, show_progress=False, **kw)


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory: pytest.TempPathFactory, tiny_cls_datalist: Path):  # noqa: ANN201
    run_dir = tmp_path_factory.mktemp("run") / "cls"
    task = tiny_task("classification", tiny_cls_datalist)
    return task, run_dir, _search(task, run_dir)


def test_run_directory_records(cls_run) -> None:  # noqa: ANN001
    _, run_dir, result = cls_run
    for name in ("resolved.yaml", "env.json", "fingerprint.json", "splits.json", "summary.json", "study.db"):
        assert (run_dir / name).exists(), name
    env = json.loads((run_dir / "env.json").read_text())
    assert env["versions"]["torch"] and env["versions"]["monai"] and env["seed"] == 0
    assert yaml.safe_load((run_dir / "resolved.yaml").read_text())["name"] == "tiny-cls"
    assert result.summary == json.loads((run_dir / "summary.json").read_text())


def test_summary_has_every_design_field(cls_run) -> None:  # noqa: ANN001
    _, _, result = cls_run
    s = result.summary
    assert s["task"] == "tiny-cls"
    assert s["objective"] == {"names": ["sensitivity_at_specificity"], "directions": ["maximize"]}
    for key in ("complete", "pruned", "failed", "running"):
        assert isinstance(s["n_trials"][key], int)
    assert s["n_trials"]["complete"] + s["n_trials"]["pruned"] + s["n_trials"]["infeasible"] == 3
    best = s["best"]
    assert {"trial", "values", "spec_hash", "metrics"} <= set(best)
    for name, m in best["metrics"].items():
        assert set(m) >= {"value", "ci95"}, name
        assert len(m["ci95"]) == 2
    assert s["proxy"]["shape"] == [16, 16] and s["proxy"]["epochs"] == 2
    assert s["simulated_data"] is True


def test_every_trial_spec_rebuilds_with_recorded_params(cls_run) -> None:  # noqa: ANN001
    _, run_dir, _ = cls_run
    trials = sorted((run_dir / "trials").iterdir())
    assert len(trials) == 3
    for tdir in trials:
        spec_json = json.loads((tdir / "spec.json").read_text())
        assert spec_json["target"].startswith("monai.networks.nets.")
        metrics = json.loads((tdir / "metrics.json").read_text())
        if metrics["state"] == "complete":
            assert metrics["values"] == [metrics["objective"]["value"]]
        # the DESIGN contract: import target; target(**kwargs)
        net = build(ArchSpec.from_dict(spec_json))
        assert sum(p.numel() for p in net.parameters()) == metrics["params"]
        log = (tdir / "log.txt").read_text()
        if metrics["state"] in ("complete", "pruned"):
            # Where the trial's time went (benchmarks/overhead.py reads it), and a log that holds every line.
            timing = metrics["timing"]
            assert len(timing["epochs_s"]) == len(metrics["history"]) >= 1
            assert min(timing["before_first_epoch_s"], timing["after_last_epoch_s"], *timing["epochs_s"]) >= 0
            if metrics["state"] == "complete":
                assert (
                    timing["before_first_epoch_s"] + sum(timing["epochs_s"]) + timing["after_last_epoch_s"]
                    <= metrics["seconds"] + 1.0
                )
                assert log.count(" epoch ") >= len(metrics["history"]) and "complete:" in log.splitlines()[-1]
        assert log.strip()


def test_splits_group_patients(cls_run) -> None:  # noqa: ANN001
    _, run_dir, _ = cls_run
    splits = json.loads((run_dir / "splits.json").read_text())
    fp = json.loads((run_dir / "fingerprint.json").read_text())
    patient = {r["case"]: r["patient"] for r in fp["cases"]}
    sets = {s: {patient[k] for k in splits[s]} for s in ("train", "val", "test")}
    assert (
        not (sets["train"] & sets["val"])
        and not (sets["train"] & sets["test"])
        and not (sets["val"] & sets["test"])
    )
    assert sum(len(splits[s]) for s in ("train", "val", "test")) == 32


def test_continue_with_more_trials_repeats_nothing(cls_run) -> None:  # noqa: ANN001
    task, run_dir, first = cls_run
    before = {p.name: (p / "metrics.json").read_text() for p in (run_dir / "trials").iterdir()}
    result = _search(task, run_dir, n_trials=5)
    n = result.summary["n_trials"]
    assert n["complete"] + n["pruned"] + n["infeasible"] == 5
    after = {p.name: (p / "metrics.json").read_text() for p in (run_dir / "trials").iterdir()}
    assert len(after) == 5
    for name, text in before.items():
        assert after[name] == text  # completed trials were not re-run
    # same command, same target: nothing new runs
    again = _search(task, run_dir, n_trials=5)
    assert len(list((run_dir / "trials").iterdir())) == 5
    assert again.summary["best"]["trial"] == result.summary["best"]["trial"]


def test_other_config_in_same_run_dir_is_refused(cls_run) -> None:  # noqa: ANN001
    task, run_dir, _ = cls_run
    other = {**task, "search": {**task["search"], "spaces": ["resnet"]}}
    with pytest.raises(RunDirError, match=r"different configuration \(differs in search.spaces"):
        _search(other, run_dir)


def test_test_split_is_never_read_during_search(tmp_path: Path, tiny_cls_datalist: Path, monkeypatch) -> None:  # noqa: ANN001
    import mednas.data._plan as plan_mod

    loaded: list[str] = []
    real = plan_mod.load_arrays

    def spy(cases, *a, **kw):  # noqa: ANN001, ANN202
        loaded.extend(c.key for c in cases)
        return real(cases, *a, **kw)

    monkeypatch.setattr(plan_mod, "load_arrays", spy)
    _search(tiny_task("classification", tiny_cls_datalist), tmp_path / "run", n_trials=1)
    test_keys = set(json.loads((tmp_path / "run" / "splits.json").read_text())["test"])
    assert test_keys and loaded
    assert not test_keys & set(loaded)
    from mednas.config import load_task
    from mednas.data import TestSplitAccessError, plan_data, read_or_create_salt
    from mednas.rundir import RunDir

    rd = RunDir(tmp_path / "run")
    plan = plan_data(
        load_task(tiny_task("classification", tiny_cls_datalist)), rd, salt=read_or_create_salt(rd)
    )
    with pytest.raises(TestSplitAccessError):
        plan.arrays("test", plan.proxy_shape)


def test_failing_and_diverging_trials_are_recorded_and_search_goes_on(
    tmp_path: Path, tiny_cls_datalist: Path, monkeypatch
) -> None:  # noqa: ANN001
    import mednas.spec
    import mednas.train

    calls = {"n": 0}
    real_build, real_fit = mednas.spec.build, mednas.train.fit

    def flaky_build(spec):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated broken candidate")
        return real_build(spec)

    def diverging_fit(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        if calls["n"] == 2:
            raise mednas.train.TrainingDiverged("loss became nan at epoch 1, batch 1")
        return real_fit(*a, **kw)

    monkeypatch.setattr(mednas.spec, "build", flaky_build)
    monkeypatch.setattr(mednas.train, "fit", diverging_fit)
    result = _search(tiny_task("classification", tiny_cls_datalist), tmp_path / "run", n_trials=2)
    n = result.summary["n_trials"]
    assert n["failed"] == 2 and n["complete"] + n["pruned"] == 2
    reasons = [
        json.loads((tmp_path / "run" / "trials" / str(i) / "metrics.json").read_text()) for i in (0, 1)
    ]
    assert reasons[0]["state"] == "failed" and "simulated broken candidate" in reasons[0]["reason"]
    assert reasons[1]["state"] == "failed" and reasons[1]["reason"].startswith("diverged: loss became nan")


def test_budget_rejects_before_training(tmp_path: Path, tiny_cls_datalist: Path, monkeypatch) -> None:  # noqa: ANN001
    import mednas.train

    def no_training(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("an over-budget candidate was trained")

    monkeypatch.setattr(mednas.train, "fit", no_training)
    task = tiny_task("classification", tiny_cls_datalist, search={"budget": {"max_params": 10}})
    result = _search(task, tmp_path / "run", n_trials=2)
    assert result.summary["n_trials"]["infeasible"] == 2
    assert "best" not in result.summary
    rec = json.loads((tmp_path / "run" / "trials" / "0" / "metrics.json").read_text())
    assert rec["state"] == "infeasible" and "parameters" in rec["reason"] and rec["params"] > 10


def test_segmentation_search(tmp_path: Path, tiny_seg_datalist: Path) -> None:
    result = _search(tiny_task("segmentation", tiny_seg_datalist), tmp_path / "run")
    s = result.summary
    assert s["objective"]["names"] == ["0.5*dice+0.5*lesion_sensitivity"]
    assert set(s["families"]) <= {"unet", "segresnet"}
    best = s["best"]
    assert {"dice", "lesion_sensitivity", "objective"} <= set(best["metrics"])
