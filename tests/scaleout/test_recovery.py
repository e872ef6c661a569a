"""Stale trials are failed and retried (bounded); out-of-memory trials retry with half the batch."""

from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pytest

from mednas import api
from mednas.rundir import RunDir
from mednas.study import make_storage
from mednas.study._recovery import MAX_RETRY, Heartbeat, host_tag, recover_stale_trials
from mednas.testing import tiny_task


def _journal_study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(storage=make_storage(f"journal:///{tmp_path / 's.journal'}"), study_name="s")


def _running_trial(study: optuna.Study, **attrs) -> optuna.Trial:  # noqa: ANN003
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    return trial


def test_stale_heartbeat_is_failed_and_retried_with_its_params(tmp_path: Path) -> None:
    study = _journal_study(tmp_path)
    trial = _running_trial(study, heartbeat=time.time() - 3600, host="elsewhere", pid=1)
    fresh = _running_trial(study, heartbeat=time.time(), host="elsewhere", pid=1)
    assert recover_stale_trials(study) == 1
    states = {t.number: t.state.name for t in study.trials}
    assert states[trial.number] == "FAIL" and states[fresh.number] == "RUNNING"
    waiting = [t for t in study.trials if t.state.name == "WAITING"]
    assert len(waiting) == 1 and waiting[0].user_attrs["retry_of"] == trial.number
    # an enqueued trial holds its parameters as fixed parameters until a worker runs it
    assert waiting[0].system_attrs["fixed_params"] == study.trials[trial.number].params


def test_dead_local_worker_is_detected_at_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = _journal_study(tmp_path)
    trial = _running_trial(study, heartbeat=time.time(), host=host_tag(), pid=dead.pid, seed=7)
    rd = RunDir(tmp_path / "run")
    rd.trial_dir(trial.number).mkdir(parents=True)  # the trial ran in this run directory (its spec, its log)
    assert recover_stale_trials(study, run_dir=rd) == 1
    assert study.trials[trial.number].state.name == "FAIL"
    # Why it failed is in its record (the worker that ran it could not write it), not in the storage.
    rec = rd.trial(trial.number)
    assert rec is not None and rec.state == "failed" and "died" in rec.reason and rec.seed == 7
    assert "fail_reason" not in study.trials[trial.number].user_attrs


def test_retries_are_bounded(tmp_path: Path) -> None:
    study = _journal_study(tmp_path)
    trial = _running_trial(study, heartbeat=0.0, retry_of=0, retry_count=MAX_RETRY)
    recover_stale_trials(study)
    assert study.trials[trial.number].state.name == "FAIL"
    assert not [t for t in study.trials if t.state.name == "WAITING"]


def test_heartbeat_records_a_timestamp(tmp_path: Path) -> None:
    study = _journal_study(tmp_path)
    trial = _running_trial(study)
    with Heartbeat(trial, interval=0.05):
        time.sleep(0.2)
    assert time.time() - study.trials[trial.number].user_attrs["heartbeat"] < 5


def _oom(*a, **kw):  # noqa: ANN002, ANN003, ANN202
    import torch

    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_retries_with_half_the_batch(
    tmp_path: Path, tiny_cls_datalist: Path, monkeypatch
) -> None:  # noqa: ANN001
    import mednas.train

    real_fit = mednas.train.fit
    batches: list[int] = []

    def fit_once_oom(model, train, val, settings, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        batches.append(settings.batch_size)
        if len(batches) == 1:
            _oom()
        return real_fit(model, train, val, settings, *a, **kw)

    monkeypatch.setattr(mednas.train, "fit", fit_once_oom)
    api.search(
        tiny_task("classification", tiny_cls_datalist),
        run_dir=tmp_path / "run",
        n_trials=1,
        show_progress=False,
    )
    assert batches == [8, 4]
    rec = json.loads((tmp_path / "run" / "trials" / "0" / "metrics.json").read_text())
    assert rec["state"] == "complete" and rec["oom_retry_batch_size"] == 4


def test_out_of_memory_twice_is_infeasible(tmp_path: Path, tiny_cls_datalist: Path, monkeypatch) -> None:  # noqa: ANN001
    import mednas.train

    monkeypatch.setattr(mednas.train, "fit", _oom)
    result = api.search(
        tiny_task("classification", tiny_cls_datalist),
        run_dir=tmp_path / "run",
        n_trials=1,
        show_progress=False,
    )
    assert result.summary["n_trials"]["infeasible"] == 1
    rec = json.loads((tmp_path / "run" / "trials" / "0" / "metrics.json").read_text())
    assert rec["state"] == "infeasible" and rec["reason"] == "out of GPU memory at batch size 8 and 4"


# Issue 8's proxy-cache race: four processes, about 12 s, so in the slow set that .ci/run runs after `make test`.
@pytest.mark.slow
@pytest.mark.parametrize("n_procs", [4])
def test_proxy_cache_race_ends_with_one_valid_entry(
    tmp_path: Path, tiny_cls_datalist: Path, n_procs: int
) -> None:
    import multiprocessing as mp

    import numpy as np

    from mednas.config import load_task
    from mednas.data import Preprocessing, load_dataset, prepare_case

    task = load_task(tiny_task("classification", tiny_cls_datalist))
    case = load_dataset(task, "salt").cases[0]
    prep = Preprocessing("classification", 2, 1, 2, "percentile")
    cache = tmp_path / "cache"
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_build_entry, args=(case, prep, str(cache), start)) for _ in range(n_procs)]
    for p in procs:
        p.start()
    start.set()  # release them together
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    entries = list(cache.iterdir())
    assert len(entries) == 1 and entries[0].is_dir()
    assert not list(cache.glob(".*"))  # no temporary files left
    assert sorted(p.name for p in entries[0].iterdir()) == ["images.npy", "index.json", "labels.npy"]
    expected, label = prepare_case(case, (16, 16), prep)
    assert np.array_equal(np.load(entries[0] / "images.npy")[0], expected)
    assert int(np.load(entries[0] / "labels.npy")[0]) == label


def _build_entry(case, prep, cache, start) -> None:  # noqa: ANN001
    from mednas.data import load_arrays

    start.wait()
    load_arrays([case], (16, 16), prep, cache)
