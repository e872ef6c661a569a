"""The run directory's records API (issue 16, item 2): typed trial records, one summary writer, one task reader."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from mednas.errors import RunDirError
from mednas.rundir import RECORD, SUMMARY, TRIAL_RECORD_SCHEMA, RunDir, TrialRecord

TASK = Path(__file__).resolve().parents[2] / "tasks" / "demo-xray-nodule.yaml"

# A record as mednas 0.1 wrote it before the schema version existed (values from a real trial of the x-ray demo).
OLD_RECORD = {
    "trial": 1,
    "seed": 1817441348,
    "state": "complete",
    "family": "efficientnet",
    "spec_hash": "bf3b415128bc88e8",
    "target": "monai.networks.nets.EfficientNet",
    "loss": "weighted_ce",
    "sampling": "uniform",
    "params": 6198,
    "macs": 392704,
    "macs_proxy": 220896.0,
    "activation_mb": 0.27,
    "objective": {"name": "sensitivity_at_specificity", "value": 0.25},
    "values": [0.25],
    "metrics": {"auroc": {"value": 0.7857142857142857, "ci95": [0.5, 1.0]}},
    "history": [{"epoch": 1, "train_loss": 2.5, "value": 0.25}],
    "learned": True,
    "feasible": True,
    "constraints": [],
    "seconds": 1.5,
    "timing": {"before_first_epoch_s": 0.16, "epochs_s": [0.04, 0.036], "after_last_epoch_s": 0.02},
    "a_key_from_a_newer_mednas": {"kept": True},
}


def test_old_record_reads_as_schema_0_and_round_trips_with_every_key(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    (rd.trial_dir(1)).mkdir(parents=True)
    (rd.trial_dir(1) / RECORD).write_text(json.dumps(OLD_RECORD))
    rec = rd.trial(1)
    assert rec is not None and rec.schema_version == 0
    assert (
        rec.params == 6198
        and isinstance(rec.macs, int)
        and rec.metric("auroc") == pytest.approx(0.7857142857)
    )
    assert rec.objective_value == 0.25 and rec.complete
    rd.write_trial(rec)
    written = json.loads((rd.trial_dir(1) / RECORD).read_text())
    assert written == {**OLD_RECORD, "schema_version": TRIAL_RECORD_SCHEMA}
    assert rd.trials() == {1: TrialRecord.from_json(written)}


def test_unreadable_or_foreign_records_are_left_out(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    for n, text in ((0, "{half-written"), (1, json.dumps({"trial": 1, "state": "exploded"})), (2, "{}")):
        rd.trial_dir(n).mkdir(parents=True)
        (rd.trial_dir(n) / RECORD).write_text(text)
    (tmp_path / "trials" / "notes").mkdir()
    assert rd.trial(0) is None and rd.trial(1) is None and rd.trial(5) is None
    assert list(rd.trials()) == [2] and rd.trial(2).state == "running"


def test_updated_copies_and_marks_fields_written() -> None:
    rec = TrialRecord(trial=3, seed=7)
    done = rec.updated(state="pruned", reason="below median", seconds=2.0)
    assert rec.state == "running" and done.state == "pruned"
    assert done.to_json() == {
        "schema_version": TRIAL_RECORD_SCHEMA,
        "trial": 3,
        "seed": 7,
        "state": "pruned",
        "reason": "below median",
        "seconds": 2.0,
    }


def test_task_is_parsed_once_and_errors_name_the_file(tmp_path: Path) -> None:
    from mednas.config import load_task

    rd = RunDir(tmp_path)
    with pytest.raises(RunDirError, match="resolved.yaml: missing"):
        rd.task()
    assert rd.resolved() == {}
    task = load_task(TASK, overrides=["data.n_cases=20"])
    rd.write_task(task)
    assert rd.task() == task and rd.task() is rd.task()
    assert rd.resolved()["name"] == task.name
    rd.resolved_path.write_text("name: x\nproblem: [not, a, problem]\n")
    with pytest.raises(RunDirError, match=r"resolved\.yaml: not a valid resolved task"):
        RunDir(tmp_path).task()
    rd.resolved_path.write_text("- a list\n")
    with pytest.raises(RunDirError, match="resolved.yaml"):
        RunDir(tmp_path).resolved()


def test_update_summary_keeps_others_keys_and_removes_none(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    assert rd.summary() == {}
    rd.update_summary(task="t", best={"trial": 1})
    rd.update_summary(lambda s: s.setdefault("retrain", {}).update(best=2))
    out = rd.update_summary(best=None, export={"path": "bundle"})
    assert out == {"task": "t", "retrain": {"best": 2}, "export": {"path": "bundle"}}
    assert rd.summary() == out
    rd.summary_path.write_text("[1, 2]")
    with pytest.raises(RunDirError, match="summary.json: not a JSON object"):
        rd.summary()


def _add_keys(root: str, prefix: str, n: int) -> None:
    rd = RunDir(root)
    for i in range(n):
        rd.update_summary(lambda s, k=f"{prefix}{i}": s.setdefault("keys", []).append(k))


def test_update_summary_loses_no_update_between_processes(tmp_path: Path) -> None:
    """Two processes each add 40 keys by read-modify-write; with the lock none is lost."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_keys, args=(str(tmp_path), p, 40)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    keys = RunDir(tmp_path).summary()["keys"]
    assert len(keys) == 80 and set(keys) == {f"{p}{i}" for p in "ab" for i in range(40)}
    assert not list(tmp_path.glob(f"{SUMMARY}.*.tmp*"))


def test_retrained_records_carry_a_schema_version(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    rd.retrain_dir(4).mkdir(parents=True)
    rd.write_retrained(4, {"trial": 4, "state": "complete"})
    seed_dir = rd.retrain_dir(4) / "seed-1"
    seed_dir.mkdir()
    rd.write_retrained(4, {"trial": 4, "state": "failed"}, seed_dir=seed_dir)
    assert rd.retrained(4) == {"schema_version": 1, "trial": 4, "state": "complete"}
    assert rd.retrained(4, seed_dir=seed_dir)["state"] == "failed"
    assert rd.retrains() == {4: rd.retrained(4)} and rd.retrained(5) is None
