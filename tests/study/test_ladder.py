"""The resolution ladder (issue 17, item 1 and item 4's records): trials climb 16x16 -> 24x24 -> 32x32 carrying their
weights, are judged at each rung's end, and record what every rung cost.

The searches run on the x-ray demo task with tiny data (80 cases, 32x32 full shape, one or two epochs per rung);
every search of this file uses the same data, cached once for the session (``tests/conftest.py``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from mednas import api
from mednas.config import load_task
from mednas.study._ladder import compute_summary, ladder_rungs, rung_shape
from mednas.study._pruning import ladder_promotes, nondominated_ranks

TASK = Path(__file__).resolve().parents[2] / "tasks" / "demo-xray-nodule.yaml"
DATA = [
    "data.n_cases=80",
    "proxy.shape=[16,16]",
    "proxy.epochs=2",
    "training.shape=[32,32]",
    "training.batch_size=8",
    "objective.bootstrap.resamples=50",
    "search.fidelity=ladder",
    "search.ladder.eta=2",
]
THREE_RUNGS = (
    "search.ladder.rungs=[{scale: 0.5, epochs: 1}, {scale: 0.75, epochs: 1}, {scale: 1.0, epochs: 2}]"
)
TWO_RUNGS = "search.ladder.rungs=[{scale: 0.5, epochs: 1}, {scale: 1.0, epochs: 1}]"


def _search(run_dir: Path, overrides: list[str], n_trials: int) -> dict:
    api.search(str(TASK), run_dir=run_dir, overrides=DATA + overrides, n_trials=n_trials, show_progress=False)
    return json.loads((run_dir / "summary.json").read_text())


def _records(run_dir: Path) -> dict[int, dict]:
    return {
        int(d.name): json.loads((d / "metrics.json").read_text())
        for d in (run_dir / "trials").iterdir()
        if (d / "metrics.json").is_file()
    }


def _study(run_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="demo-xray-nodule", storage=f"sqlite:///{run_dir / 'study.db'}")


@pytest.fixture(scope="module")
def ladder_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A six-trial single-objective ladder search over three rungs (successive halving, eta 2)."""
    run_dir = tmp_path_factory.mktemp("ladder") / "run"
    return run_dir, _search(run_dir, [THREE_RUNGS], 6)


# ----------------------------------------------------------------------------------------------- the rungs


def test_rung_shapes_are_multiples_of_8_at_least_16_and_clamped() -> None:
    assert rung_shape((32, 32), 0.5) == (16, 16)
    assert rung_shape((32, 32), 0.75) == (24, 24)
    assert rung_shape((128, 100), 0.25) == (32, 24)
    assert rung_shape((20, 200), 0.1) == (16, 24)  # at least 16, a multiple of 8
    assert rung_shape((12, 64), 0.5) == (12, 32)  # never larger than the full shape
    assert rung_shape((33, 34, 35), 1.0) == (33, 34, 35)  # the top rung is the full shape as it is


def test_default_ladder_follows_the_full_shape_and_proxy_epochs() -> None:
    task = load_task(TASK, overrides=["search.fidelity=ladder", "proxy.epochs=9"])
    three = ladder_rungs(task, (128, 128))
    assert [(r.scale, r.shape, r.epochs) for r in three] == [
        (0.25, (32, 32), 4),
        (0.5, (64, 64), 4),
        (1.0, (128, 128), 4),  # the climb's epochs split evenly over the shapes (progressive resizing)
    ]
    # A quarter of 32 is 8 pixels, under 16: the ladder starts at half resolution.
    two = ladder_rungs(task, (32, 48))
    assert [(r.scale, r.shape, r.epochs) for r in two] == [(0.5, (16, 24), 4), (1.0, (32, 48), 4)]
    one_epoch = load_task(TASK, overrides=["search.fidelity=ladder", "proxy.epochs=1"])
    assert [r.epochs for r in ladder_rungs(one_epoch, (128, 128))] == [1, 1, 1]


def test_the_pruner_places_its_rungs_at_the_ladders() -> None:
    from mednas.study import make_pruner

    deferred = make_pruner(load_task(TASK, overrides=["search.fidelity=ladder"]))
    assert isinstance(
        deferred, optuna.pruners.NopPruner
    )  # mednas pauses and promotes (mednas.study._promotion)
    sha = make_pruner(
        load_task(
            TASK,
            overrides=["search.fidelity=ladder", "search.ladder.eta=4", "search.ladder.promotion=immediate"],
        )
    )
    assert isinstance(sha, optuna.pruners.SuccessiveHalvingPruner)
    assert (sha._min_resource, sha._reduction_factor, sha._min_early_stopping_rate) == (1, 4, 0)
    hb = make_pruner(
        load_task(
            TASK,
            overrides=[
                "search.fidelity=ladder",
                "search.ladder.brackets=hyperband",
                "training.shape=[128,128]",
            ],
        )
    )
    # Three default rungs at 128x128 with eta 3: the top rung reports at step 3**2.
    assert isinstance(hb, optuna.pruners.HyperbandPruner)
    assert (hb._min_resource, hb._max_resource, hb._reduction_factor) == (1, 9, 3)


# ------------------------------------------------------------------------------ the multi-objective rung rule


def test_nondominated_ranks() -> None:
    assert nondominated_ranks([[1, 2], [2, 1], [2, 2], [3, 3], [1, 2]]) == [0, 0, 1, 2, 0]


def _trial(number: int, values: list[float], others: list[tuple[int, list[float], str]]) -> SimpleNamespace:
    from optuna.trial import TrialState

    trials = [
        SimpleNamespace(number=n, state=getattr(TrialState, state), user_attrs={"rung_values": {"0": vals}})
        for n, vals, state in others
    ]
    study = SimpleNamespace(get_trials=lambda deepcopy=False: trials)
    return SimpleNamespace(number=number, study=study)


def test_the_rung_rule_ranks_by_pareto_rank_then_primary() -> None:
    # (AUROC up, parameters down); A and B are the front, C is dominated by both; a failed trial does not count.
    others = [(0, [0.9, 100.0], "COMPLETE"), (1, [0.5, 10.0], "PRUNED"), (2, [0.4, 200.0], "RUNNING")]
    others.append((3, [0.99, 1.0], "FAIL"))
    directions = ["maximize", "minimize"]
    # A new front member with the second-best AUROC among the front: within the best ceil(4 / 2) = 2.
    assert ladder_promotes(_trial(9, [0.6, 50.0], others), 0, [0.6, 50.0], directions, eta=2)
    # On the front but third by AUROC: out.
    assert not ladder_promotes(_trial(9, [0.45, 5.0], others[:2] + others[2:]), 0, [0.45, 5.0], directions, 3)
    # Dominated (A has more AUROC with fewer parameters): rank 1, out, however high its AUROC.
    assert not ladder_promotes(_trial(9, [0.85, 150.0], others), 0, [0.85, 150.0], directions, eta=2)
    # The first trial at a rung always climbs; an undefined value counts as the worst.
    assert ladder_promotes(_trial(0, [0.1, 9.0], []), 0, [0.1, 9.0], directions, eta=3)
    assert not ladder_promotes(_trial(9, [math.nan, 1.0], others), 0, [math.nan, 1.0], directions, eta=2)


def test_compute_summary_counts_the_share_spent_on_pruned_trials() -> None:
    from mednas.rundir import TrialRecord

    records = [
        TrialRecord(trial=0, state="complete", compute={"voxel_epochs": 300, "seconds": 3.0}),
        TrialRecord(trial=1, state="pruned", compute={"voxel_epochs": 100, "seconds": 1.0}),
        TrialRecord(trial=2, state="infeasible"),
    ]
    assert compute_summary(records) == {
        "voxel_epochs": 400,
        "pruned_voxel_epochs": 100,
        "pruned_share": 0.25,
        "seconds": 4.0,
    }


# ------------------------------------------------------------------------------------------- a ladder search


def test_survivors_climb_every_rung_carrying_their_weights(ladder_run: tuple[Path, dict]) -> None:
    import torch

    from mednas.spaces import create_space
    from mednas.spec import ArchSpec, build

    run_dir, summary = ladder_run
    records = _records(run_dir)
    n_train = len(json.loads((run_dir / "splits.json").read_text())["train"])
    complete = [r for r in records.values() if r["state"] == "complete"]
    assert complete, "the first trial at every rung climbs: at least one trial completes"
    for rec in complete:
        assert rec["fidelity"] == "ladder" and rec["rung_reached"] == 2 and rec["shape"] == [32, 32]
        assert [r["shape"] for r in rec["rungs"]] == [[16, 16], [24, 24], [32, 32]]
        assert [r["start"] for r in rec["rungs"]] == ["fresh", "carried", "carried"]
        assert [r["epochs"] for r in rec["rungs"]] == [1, 1, 2]
        assert rec["values"][0] == pytest.approx(rec["rungs"][-1]["value"])
        assert [h["rung"] for h in rec["history"]] == [0, 1, 2, 2]
        # The top rung's weights are the trial's model.pt: they run the network built for the full shape.
        spec = ArchSpec.from_dict(
            json.loads((run_dir / "trials" / str(rec["trial"]) / "spec.json").read_text())
        )
        net = build(create_space(rec["family"]).adapt_to_shape(spec, (32, 32)))
        state = torch.load(run_dir / "trials" / str(rec["trial"]) / rec["weights"], weights_only=True)
        net.load_state_dict(state)
    assert summary["best"]["trial"] in {r["trial"] for r in complete}
    for rec in records.values():
        for rung in rec["rungs"]:
            assert rung["voxel_epochs"] == rung["epochs"] * n_train * math.prod(rung["shape"])
        # A promoted trial's rungs, taken over by its continuation, are counted once: in the paused trial's record.
        own = [r for r in rec["rungs"] if "continued_from" not in r]
        assert rec["compute"]["voxel_epochs"] == sum(r["voxel_epochs"] for r in own)
        assert rec["compute"]["seconds"] == pytest.approx(sum(r["seconds"] for r in own), abs=1e-3)


def test_pruned_trials_stop_at_a_lower_rung(ladder_run: tuple[Path, dict]) -> None:
    run_dir, summary = ladder_run
    records = _records(run_dir)
    pruned = [r for r in records.values() if r["state"] == "pruned"]
    assert pruned, "six trials with eta 2: some are cut"
    study = _study(run_dir)
    for rec in pruned:
        k = rec["rung_reached"]
        assert k < 2 and len(rec["rungs"]) == k + 1
        assert rec["shape"] == rec["rungs"][-1]["shape"] and f"end of rung {k}" in rec["reason"]
        assert not (run_dir / "trials" / str(rec["trial"]) / "model.pt").exists()
        frozen = study.trials[rec["trial"]]
        assert frozen.state == optuna.trial.TrialState.PRUNED
        # Reported only at rung ends, rung k at step eta**k (eta 2), the values the record holds.
        assert frozen.intermediate_values == {2**j: r["value"] for j, r in enumerate(rec["rungs"])}
        assert [v[0] for _, v in sorted(frozen.user_attrs["rung_values"].items())] == [
            r["value"] for r in rec["rungs"]
        ]
    assert summary["n_trials"]["pruned"] == len(pruned)


def test_summary_records_the_ladder_and_its_compute(ladder_run: tuple[Path, dict]) -> None:
    run_dir, summary = ladder_run
    records = _records(run_dir).values()
    assert summary["fidelity"] == "ladder"
    assert summary["ladder"] == {
        "rungs": [
            {"scale": 0.5, "shape": [16, 16], "epochs": 1},
            {"scale": 0.75, "shape": [24, 24], "epochs": 1},
            {"scale": 1.0, "shape": [32, 32], "epochs": 2},
        ],
        "eta": 2,
        "brackets": "successive_halving",
        "promotion": "deferred",
    }
    compute = summary["compute"]
    assert compute["voxel_epochs"] == sum(r["compute"]["voxel_epochs"] for r in records)
    promoted = {r["continues"]["trial"] for r in records if r.get("continues")}
    pruned = sum(
        r["compute"]["voxel_epochs"] for r in records if r["state"] == "pruned" and r["trial"] not in promoted
    )
    assert compute["pruned_voxel_epochs"] == pruned > 0
    assert compute["pruned_share"] == pytest.approx(pruned / compute["voxel_epochs"])


def test_a_network_that_cannot_carry_restarts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mednas.train import _inherit

    # No built-in family changes its parameters with the input size (tests/train/test_inherit.py): pretend one does.
    monkeypatch.setattr(_inherit, "same_structure", lambda src, dst: False)
    run_dir = tmp_path / "run"
    _search(run_dir, [TWO_RUNGS], 1)
    # One candidate: it pauses at rung 0, its rung is complete, and its continuation trains the top rung.
    rec = next(r for r in _records(run_dir).values() if r["state"] == "complete")
    assert rec["continues"] == {"trial": 0, "rung": 1}
    assert [r["start"] for r in rec["rungs"]] == ["fresh", "restarted"]
    assert "restarted fresh" in (run_dir / "trials" / str(rec["trial"]) / "log.txt").read_text()


# A 10-trial search (about 10 s): in the slow set, which .ci/run runs after `make test`.
@pytest.mark.slow
def test_two_objectives_on_the_ladder_end_with_a_pareto_front(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    summary = _search(
        run_dir,
        [
            TWO_RUNGS,
            "objective={metric: auroc, secondary: [params], bootstrap: {resamples: 50}}",
            "search.seed=2",
        ],
        10,
    )
    records = _records(run_dir)
    # Ten trials over two rungs: five to seven reach the top (about one in eta = 2 is cut, more early on when few
    # trials compete); on this data the front has 3 or 4 points for seeds 1 to 3 (1 for seed 0 with 8 trials).
    assert len(summary["pareto_front"]) >= 3
    study = _study(run_dir)
    for n, rec in records.items():
        frozen = study.trials[n]
        assert frozen.intermediate_values == {}  # Optuna's report() cannot take several objectives
        assert all(len(v) == 2 for v in frozen.user_attrs["rung_values"].values())
        if rec["state"] == "pruned":
            assert rec["rung_reached"] == 0 and "Pareto rank" in rec["reason"]
        else:
            assert rec["rung_reached"] == 1 and rec["values"][1] == rec["params"]


# ------------------------------------------------------------------------------- a killed trial resumes (item 2)

RESUMABLE = "search.ladder.rungs=[{scale: 0.5, epochs: 1}, {scale: 0.75, epochs: 3}, {scale: 1.0, epochs: 1}]"
# One trial climbing straight up (Optuna's decision: the first trial at a rung climbs), so the kill and the resume
# happen in one trial; a killed continuation of a paused trial resumes the same way (tests/test_cli_ladder.py).
IMMEDIATE = "search.ladder.promotion=immediate"


class _Killed(BaseException):
    """Stands in for SIGKILL: no handler of the trial or of Optuna records it, so the trial stays RUNNING and keeps
    its checkpoints (as under SIGTERM, which mednas turns into SystemExit)."""


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_no_ladder_checkpoint_outlives_its_trial(ladder_run: tuple[Path, dict]) -> None:
    run_dir, _ = ladder_run
    left = [p.name for p in (run_dir / "trials").glob("*/*") if p.name.startswith(("rung-", "ladder.json"))]
    assert left == []


def test_a_killed_trial_resumes_its_rung_without_training_a_passed_rung_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from mednas.study import _ladder

    run_dir = tmp_path / "run"
    real = _ladder.LadderReporter.__call__

    def killed_at_rung_1_epoch_2(self: _ladder.LadderReporter, result: object) -> None:
        real(self, result)
        if self.rung == 1 and result.epoch == 2:  # type: ignore[attr-defined]
            raise _Killed

    with monkeypatch.context() as m:
        m.setattr(_ladder.LadderReporter, "__call__", killed_at_rung_1_epoch_2)
        with pytest.raises(_Killed):
            _search(run_dir, [RESUMABLE, IMMEDIATE], 1)
    killed = run_dir / "trials" / "0"
    assert sorted(p.name for p in killed.glob("rung-*")) == ["rung-0.pt", "rung-1.ckpt"]
    rung0 = torch.load(killed / "rung-0.pt", weights_only=True)  # a plain state dict
    progress = json.loads((killed / "ladder.json").read_text())
    assert [item["entry"]["rung"] for item in progress["rungs"]] == [0]
    # As if its process had died: crash recovery of the next search fails it and queues a retry.
    study = _study(run_dir)
    study._storage.set_trial_user_attr(study.trials[0]._trial_id, "pid", _dead_pid())

    summary = _search(run_dir, [RESUMABLE, IMMEDIATE], 1)
    assert summary["n_trials"]["complete"] == 1 and summary["n_trials"]["failed"] == 1
    records = _records(run_dir)
    assert records[0]["state"] == "failed" and "died" in records[0]["reason"]
    rec = records[1]
    assert rec["state"] == "complete" and rec["retry_of"] == 0
    assert rec["resumed_from"] == {"trial": 0, "rung": 1, "epoch": 2}
    assert rec["seed"] == progress["seed"]  # the killed training continues, with its seed
    # Every epoch of the ladder once: rung 0 (1 epoch) taken over, rung 1's epochs 1-2 from the checkpoint, 3 here.
    assert [(h["epoch"], h["rung"]) for h in rec["history"]] == [(1, 0), (2, 1), (3, 1), (4, 1), (5, 2)]
    assert rec["rungs"][0] == dict(progress["rungs"][0]["entry"], resumed_from=0)
    assert [r["epochs"] for r in rec["rungs"]] == [1, 3, 1]
    assert [r["start"] for r in rec["rungs"]] == ["fresh", "carried", "carried"]
    assert rec["compute"]["voxel_epochs"] == sum(r["voxel_epochs"] for r in rec["rungs"])
    log = (run_dir / "trials" / "1" / "log.txt").read_text()
    assert "resuming trial 0" in log and "rung 0 (" not in log  # rung 0 was not trained again
    assert "epoch 1/3" not in log and "epoch 2/3" not in log and "rung 1 (24x24) epoch 3/3" in log
    # Optuna saw every rung once, at its step, with the values the killed trial reached there.
    frozen = _study(run_dir).trials[1]
    assert frozen.intermediate_values == {2**k: r["value"] for k, r in enumerate(rec["rungs"])}
    assert frozen.intermediate_values[1] == progress["rungs"][0]["values"][0]
    assert sorted(frozen.user_attrs["rung_values"]) == ["0", "1", "2"]
    assert frozen.user_attrs["seed"] == progress["seed"]
    # The checkpoints moved to the retry and went with it; model.pt holds the top rung's weights.
    for n in (0, 1):
        assert not [
            p for p in (run_dir / "trials" / str(n)).iterdir() if p.name.startswith(("rung-", "ladder"))
        ]
    assert set(torch.load(run_dir / "trials" / "1" / "model.pt", weights_only=True)) == set(rung0)


def test_a_retry_resumes_from_the_latest_trial_of_its_chain() -> None:
    from mednas.study._recovery import retried_trials

    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    for attrs in ({}, {"retry_of": 0, "retry_count": 1}, {}, {"retry_of": 0, "retry_count": 2}):
        study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=attrs))
    # mednas's retries name only the original: the chain is found by retry_of (trial 2 is someone else's)
    assert retried_trials(study.trials[3], study) == [1, 0]
    assert retried_trials(study.trials[2], study) == []
    # Optuna's heartbeat retries list the chain themselves
    study.add_trial(
        optuna.create_trial(
            state=optuna.trial.TrialState.FAIL, system_attrs={"failed_trial": 0, "retry_history": [0, 2]}
        )
    )
    assert retried_trials(study.trials[4], study) == [2, 0]


# Two searches (about 12 s): in the slow set, which .ci/run runs after `make test`.
@pytest.mark.slow
def test_a_retry_whose_ladder_checkpoint_is_broken_climbs_from_rung_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A truncated ``ladder.json`` is not trusted: the retry climbs from rung 0 and its log says so."""
    from mednas.study import _ladder

    run_dir = tmp_path / "run"
    real = _ladder.LadderReporter.__call__

    def killed_in_rung_1(self: _ladder.LadderReporter, result: object) -> None:
        real(self, result)
        if self.rung == 1:
            raise _Killed

    with monkeypatch.context() as m:
        m.setattr(_ladder.LadderReporter, "__call__", killed_in_rung_1)
        with pytest.raises(_Killed):
            _search(run_dir, [RESUMABLE, IMMEDIATE], 1)
    progress = run_dir / "trials" / "0" / "ladder.json"
    progress.write_text(progress.read_text()[:40])  # cut off mid-write
    study = _study(run_dir)
    study._storage.set_trial_user_attr(study.trials[0]._trial_id, "pid", _dead_pid())

    _search(run_dir, [RESUMABLE, IMMEDIATE], 1)
    rec = _records(run_dir)[1]
    # Trained again from rung 0 (the pruner may then stop it there: the killed trial's rung-0 report competes).
    assert rec["state"] in ("complete", "pruned") and rec["retry_of"] == 0 and "resumed_from" not in rec
    assert rec["history"][0]["epoch"] == 1 and rec["history"][0]["rung"] == 0
    assert rec["rungs"][0]["start"] == "fresh" and "resumed_from" not in rec["rungs"][0]
    assert "climbing from rung 0" in (run_dir / "trials" / "1" / "log.txt").read_text()


def test_deferred_promotion_keeps_each_rungs_quota(ladder_run: tuple[Path, dict]) -> None:
    """The quota: of the n candidates that completed rung k, at most max(1, n // eta) ever climb; a paused
    trial climbs on in a continuation that takes over its weights, and none keeps rung weights after the search."""
    run_dir, _summary = ladder_run
    records = _records(run_dir)
    origin = {n: n for n in records}
    for n in sorted(records):
        cont = records[n].get("continues")
        if cont:
            origin[n] = origin[cont["trial"]]
            assert records[cont["trial"]]["paused_at"] == cont["rung"] - 1
            assert [r["rung"] for r in records[n]["rungs"][: cont["rung"]]] == list(range(cont["rung"]))
            assert all(r["continued_from"] == cont["trial"] for r in records[n]["rungs"][: cont["rung"]])
    assert any(r.get("continues") for r in records.values()), (
        "six candidates, eta 2: a paused trial is promoted"
    )
    for k in range(2):
        # A twin (duplicate_of: the same candidate sampled again) trains nothing: its record copies the rungs.
        trained = {n: r for n, r in records.items() if r.get("duplicate_of") is None}
        reached = {origin[n] for n, r in trained.items() if len(r.get("rungs") or []) > k}
        climbed = {origin[n] for n, r in trained.items() if len(r.get("rungs") or []) > k + 1}
        assert 0 < len(climbed) <= max(1, len(reached) // 2), (k, reached, climbed)
    assert not list((run_dir / "trials").glob("*/rung-*.pt")), "paused trials' weights are deleted at the end"
    study = _study(run_dir)
    new = [t for t in study.trials if "continues" not in t.user_attrs and t.state.is_finished()]
    assert len(new) == 6, "continuations are not new candidates: the target counts six"


# -------------------------------------------------------------------------------------- deferred promotion


def _fake_trials(spec: list[tuple[int, str, dict]]) -> list[SimpleNamespace]:
    from optuna.trial import TrialState

    return [SimpleNamespace(number=n, state=getattr(TrialState, s), user_attrs=a) for n, s, a in spec]


def test_a_complete_rung_promotes_its_best_within_the_quota(tmp_path: Path) -> None:
    from optuna.study import StudyDirection

    from mednas.study._promotion import next_promotion

    # Five candidates paused at rung 0 (a failed trial does not count); trial 5 still trains rung 0.
    values = {0: 0.2, 1: 0.9, 2: 0.5, 3: 0.7, 5: 0.1, 6: 0.6}
    trials = _fake_trials(
        [(n, "PRUNED", {"rung_values": {"0": [v]}, "paused_at": 0}) for n, v in values.items() if n != 5]
    )
    trials += _fake_trials([(4, "FAIL", {"rung_values": {"0": [1.0]}}), (5, "RUNNING", {})])
    study = SimpleNamespace(get_trials=lambda deepcopy=False: trials, directions=[StudyDirection.MAXIMIZE])
    for n in values:
        (tmp_path / str(n)).mkdir()
        (tmp_path / str(n) / "ladder.json").write_text("{}")
        (tmp_path / str(n) / "rung-0.pt").write_bytes(b"")

    def promote() -> int | None:
        found = next_promotion(study, lambda n: tmp_path / str(n), eta=3, n_rungs=3)
        return None if found is None else found[0].number

    assert promote() is None, "rung 0 is not complete while a trial still trains it"
    trials[-1] = _fake_trials([(5, "PRUNED", {"rung_values": {"0": [0.1]}, "paused_at": 0})])[0]
    # Complete: six candidates, q = 6 // 3 = 2: the best (trial 1, 0.9), then the second (trial 3, 0.7).
    assert promote() == 1
    trials += _fake_trials([(7, "WAITING", {"continues": 1, "ladder_origin": 1, "rung_entered": 1})])
    # A paused trial whose files are in another run directory is left to the worker that has them.
    (tmp_path / "3" / "rung-0.pt").unlink()
    assert promote() is None
    (tmp_path / "3" / "rung-0.pt").write_bytes(b"")
    assert promote() == 3
    trials += _fake_trials([(8, "RUNNING", {"continues": 3, "ladder_origin": 3, "rung_entered": 1})])
    assert promote() is None, "the quota of two is full; rung 1 is not complete while 7 and 8 train it"


def test_a_candidate_sampled_again_while_on_the_ladder_is_not_trained_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ladder trial pauses at rung ends, so a candidate sampled again finds no completed twin: it is still
    the same candidate (measured: one spec sampled three times took three of a rung's four places)."""
    import dataclasses

    from mednas.study import _trial

    real = _trial.TrialObjective._sample
    first: dict[str, object] = {}

    def always_the_first(self: _trial.TrialObjective, run: object) -> object:
        draw = real(self, run)
        kept = first.setdefault("draw", draw)
        run.trial.set_user_attr("spec_hash", kept.spec.hash)  # type: ignore[attr-defined]
        run.note(spec_hash=kept.spec.hash, family=kept.family)  # type: ignore[attr-defined]
        return dataclasses.replace(kept, seed=draw.seed)

    monkeypatch.setattr(_trial.TrialObjective, "_sample", always_the_first)
    run_dir = tmp_path / "run"
    summary = _search(run_dir, [TWO_RUNGS], 3)
    records = _records(run_dir)
    assert [records[n].get("duplicate_of") for n in (1, 2)] == [0, 0]
    for n in (1, 2):
        assert records[n]["state"] == "pruned" and records[n]["compute"]["voxel_epochs"] == 0
        assert not records[n].get("rungs") and "on the ladder" in records[n]["reason"]
    top = next(r for r in records.values() if r["state"] == "complete")
    assert top["continues"]["trial"] == 0 and len(top["rungs"]) == 2
    assert summary["n_trials"]["continuations"] == 1 and len(records) == 4
    assert (
        summary["compute"]["voxel_epochs"]
        == records[0]["compute"]["voxel_epochs"] + top["compute"]["voxel_epochs"]
    )
