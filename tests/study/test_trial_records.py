"""A trial's truth is its record (``trials/<n>/metrics.json``, a ``TrialRecord``); Optuna keeps only what is read
from the shared storage: samplers, pruners, crash recovery, twin detection and the ranking (issue 16).

Runs nothing new: reads the session's tiny classification search (``cls_run`` in ``tests/_bundles.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import optuna

from mednas.rundir import TRIAL_RECORD_SCHEMA, RunDir
from mednas.study._runner import TRIAL_USER_ATTRS

#: What a search used to copy into Optuna's user attributes and now keeps in the record only.
RECORD_ONLY = {"family", "params", "macs", "latency_ms", "threshold", "not_learning", "fail_reason"}


def _study(run_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny-cls", storage=f"sqlite:///{run_dir / 'study.db'}")


def _expected_attrs(t: optuna.trial.FrozenTrial) -> set[str]:
    """The user attributes a single-objective trial of this state carries, and no others."""
    started = {"seed", "host", "pid", "spec_hash"}
    if "infeasible" in t.user_attrs:  # rejected before training: no heartbeat, no score
        return started | {"infeasible"}
    if "duplicate_of" in t.user_attrs:  # a twin's score reused: nothing trained
        return started | {"duplicate_of"} | ({"learned", "constraints", "feasible"} & set(t.user_attrs))
    if t.state.name == "COMPLETE":
        return started | {"heartbeat", "learned", "constraints", "feasible"}
    return started | {"heartbeat"} | ({"learned"} & set(t.user_attrs))  # pruned (flagged when not learning)


def test_trial_user_attributes_are_exactly_the_kept_set(cls_run: SimpleNamespace) -> None:
    trials = _study(cls_run.run_dir).trials
    assert trials and any(t.state.name == "COMPLETE" for t in trials)
    for t in trials:
        attrs = set(t.user_attrs)
        assert attrs <= TRIAL_USER_ATTRS, f"trial {t.number}: {sorted(attrs - TRIAL_USER_ATTRS)} not kept"
        assert not attrs & RECORD_ONLY, t.number
        assert attrs == _expected_attrs(t), t.number


def test_the_record_holds_what_the_storage_no_longer_does(cls_run: SimpleNamespace) -> None:
    rd = RunDir(cls_run.run_dir)
    records = rd.trials()
    for t in _study(cls_run.run_dir).trials:
        rec = records[t.number]
        assert rec.family == t.params["family"] and rec.spec_hash == t.user_attrs["spec_hash"]
        assert rec.seed == t.user_attrs["seed"]
        if rec.complete:
            assert rec.params and rec.macs and rec.learned is not None and rec.metrics
            assert rec.values == list(t.values) and rec.objective_value == t.values[0]
    best = cls_run.summary["best"]
    rec = records[best["trial"]]
    assert (best["family"], best["params"], best["macs"]) == (rec.family, rec.params, rec.macs)


def test_a_trial_record_round_trips_with_its_schema_version(cls_run: SimpleNamespace, tmp_path: Path) -> None:
    rd, copy = RunDir(cls_run.run_dir), RunDir(tmp_path / "copy")
    for n, rec in rd.trials().items():
        written = json.loads(rd.trial_record_path(n).read_text())
        assert written["schema_version"] == TRIAL_RECORD_SCHEMA == 1 and rec.schema_version == 1
        assert rec.to_json() == written
        copy.write_trial(rec)
        again = copy.trial(n)
        assert again == rec and json.loads(copy.trial_record_path(n).read_text()) == written
