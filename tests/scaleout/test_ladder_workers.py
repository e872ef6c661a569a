"""Three workers on one PostgreSQL storage climb one ladder study (issue 17, item 2: rung decisions are shared).

Every worker judges a trial at a rung's end against what the shared storage holds, so each trial's rung is decided
once: Optuna holds exactly one report per rung it reached, at step ``eta**k``, the value its record holds there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from mednas.testing import tiny_task

ROOT = Path(__file__).resolve().parents[2]
ETA = 2
N_TRIALS = 9
RUNGS = [{"scale": 0.5, "epochs": 1}, {"scale": 0.75, "epochs": 1}, {"scale": 1.0, "epochs": 2}]


def _task_file(tmp_path: Path, datalist: Path) -> Path:
    search = {"fidelity": "ladder", "ladder": {"rungs": RUNGS, "eta": ETA}}
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(tiny_task("classification", datalist, search=search)))
    return path


@pytest.mark.postgres
@pytest.mark.slow  # three worker processes; the ladder itself is covered in-process by tests/study/test_ladder.py
@pytest.mark.timeout(900)
def test_three_workers_on_postgresql_climb_one_ladder_with_each_rung_decided_once(
    tmp_path: Path, tiny_cls_datalist: Path
) -> None:
    import optuna

    from mednas.study import make_storage

    url = os.environ.get("MEDNAS_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("MEDNAS_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server and sets it)")
    run, study_name = tmp_path / "run", f"ladder-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "mednas", "--quiet", "search", str(_task_file(tmp_path, tiny_cls_datalist))]
    cmd += ["--run-dir", str(run), "--storage", url, "--study-name", study_name]
    cmd += ["--n-trials", str(N_TRIALS), "--workers", "3"]
    env = dict(os.environ, MEDNAS_MALLOC_TUNING="0")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]

    study = optuna.load_study(study_name=study_name, storage=make_storage(url))
    trials = study.get_trials(deepcopy=False)
    assert len({t.number for t in trials}) == len(trials), "trial numbers are not unique"
    states = [t.state.name for t in trials]
    assert "RUNNING" not in states and "WAITING" not in states and "FAIL" not in states, states
    # Continuations of paused trials (deferred promotion) are not new candidates: the target counts candidates.
    continuations = [t for t in trials if "continues" in t.user_attrs]
    # Each worker checks the shared count before it starts a candidate; a candidate sampled again while its twin
    # climbs ends at once (not trained), so two workers can pass the check together: at most one extra each.
    candidates = len(trials) - len(continuations)
    assert N_TRIALS <= candidates <= N_TRIALS + 2, (candidates, states)
    assert states.count("COMPLETE") + states.count("PRUNED") == len(trials)
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(pids) >= 2, "the workers did not share the study"

    records = {}
    for path in run.glob("trials/*/metrics.json"):
        rec = json.loads(path.read_text())
        assert rec["trial"] == int(path.parent.name) and rec["trial"] not in records
        records[rec["trial"]] = rec
    assert sorted(records) == sorted(t.number for t in trials), "a trial has no record, or two"
    top = len(RUNGS) - 1
    for t in trials:
        rec = records[t.number]
        if rec["state"] == "infeasible" or rec.get("duplicate_of") is not None:
            assert t.intermediate_values == {}
            continue
        reached = rec["rung_reached"]
        assert (reached == top) == (rec["state"] == "complete"), rec
        # One report per rung reached, at its step, the value of the record's rung; none elsewhere.
        assert t.intermediate_values == {ETA**k: r["value"] for k, r in enumerate(rec["rungs"])}
        assert sorted(t.user_attrs["rung_values"]) == [str(k) for k in range(reached + 1)]
        assert len(rec["rungs"]) == reached + 1
        # The checkpoints of a finished trial are gone.
        assert not [
            p for p in (run / "trials" / str(t.number)).iterdir() if p.name.startswith(("rung-", "ladder"))
        ]

    summary = json.loads((run / "summary.json").read_text())
    counts = summary["n_trials"]
    assert counts["continuations"] == len(continuations)
    assert counts["complete"] + counts["pruned"] + counts.get("infeasible", 0) == len(trials)
    # Successive halving's quota, over the three workers: of the n candidates that completed rung k, max(1, n // eta)
    # at most climbed, each promotion taken once (a candidate is a paused trial and the continuation promoting it).
    origin = {t.number: t.user_attrs.get("ladder_origin", t.number) for t in trials}
    assert len({t.user_attrs["continues"] for t in continuations}) == len(continuations)
    for k in range(top):
        # A twin (duplicate_of: the same candidate sampled again) trains nothing: its record copies the rungs.
        trained = {n: r for n, r in records.items() if r.get("duplicate_of") is None}
        reached = {origin[n] for n, r in trained.items() if len(r.get("rungs") or []) > k}
        climbed = {origin[n] for n, r in trained.items() if len(r.get("rungs") or []) > k + 1}
        assert 0 < len(climbed) <= max(1, len(reached) // ETA), (k, reached, climbed)
    assert counts["complete"] == states.count("COMPLETE") and counts["running"] == counts["failed"] == 0
    assert counts["complete"] >= 1 and counts["pruned"] >= 1, "eta 2 over nine trials both climbs and cuts"
    assert summary["compute"]["voxel_epochs"] == sum(r["compute"]["voxel_epochs"] for r in records.values())
