"""Weight inheritance between candidates (issue 17, item 3; ``search.inherit``): a new candidate of a family starts
from the weights of the most similar finished candidate of that family, on the ladder's rung 0 or the flat proxy.

The searches run on the x-ray demo task with tiny data (80 cases, 32x32 full shape, one family, one epoch per
rung), the same data ``tests/study/test_ladder.py`` uses (cached once per session).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mednas import api
from mednas.config import config_hash, load_task
from mednas.errors import ConfigError

TASK = Path(__file__).resolve().parents[2] / "tasks" / "demo-xray-nodule.yaml"
DATA = [
    "data.n_cases=80",
    "proxy.shape=[16,16]",
    "proxy.epochs=1",
    "training.shape=[32,32]",
    "training.batch_size=8",
    "objective.bootstrap.resamples=50",
    "search.spaces=[resnet]",
]
LADDER = [
    "search.fidelity=ladder",
    "search.ladder.eta=2",
    "search.ladder.rungs=[{scale: 0.5, epochs: 1}, {scale: 1.0, epochs: 1}]",
]


class _Capture:
    """Wraps ``mednas.train.train_candidate``: the ``init_state`` each trial's first training started from."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.first: dict[
            int, Any
        ] = {}  # trial seed -> init_state of its first call (rung 0, or the flat proxy)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.first.setdefault(kwargs["seed"], kwargs.get("init_state"))
        return self.real(*args, **kwargs)


def _search(run_dir: Path, overrides: list[str], n_trials: int) -> tuple[dict[int, dict], _Capture]:
    import mednas.train

    capture = _Capture(mednas.train.train_candidate)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mednas.train, "train_candidate", capture)
        api.search(
            str(TASK), run_dir=run_dir, overrides=DATA + overrides, n_trials=n_trials, show_progress=False
        )
    records = {
        int(d.name): json.loads((d / "metrics.json").read_text())
        for d in (run_dir / "trials").iterdir()
        if (d / "metrics.json").is_file()
    }
    return records, capture


@pytest.fixture(scope="module")
def inherit_ladder(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, dict[int, dict], _Capture]]:
    """A five-trial ladder search of one family with inheritance on."""
    run_dir = tmp_path_factory.mktemp("inherit") / "run"
    records, capture = _search(run_dir, [*LADDER, "search.inherit=true"], 5)
    yield run_dir, records, capture


def _trained(records: dict[int, dict]) -> dict[int, dict]:
    """The trials that trained (not rejected before training, not reusing a twin's score)."""
    return {n: r for n, r in records.items() if r["state"] != "infeasible" and "duplicate_of" not in r}


def _assert_started_from_parents(run_dir: Path, records: dict[int, dict], capture: _Capture) -> None:
    """Each trial with a parent: an earlier finished trial of its family, whose kept weights it trained from."""
    import torch

    from mednas.study._inherit import _weights

    for n, rec in _trained(records).items():
        parent = rec["parent"]
        if parent is None:
            assert rec["inherited_fraction"] == 0.0 and capture.first[rec["seed"]] is None
            continue
        assert parent < n and records[parent]["state"] in ("complete", "pruned")
        assert records[parent]["family"] == rec["family"]
        assert 0.0 < rec["inherited_fraction"] <= 1.0
        # parent.pt (or, for a pruned ladder trial, its last rung's checkpoint where one was kept)
        kept = torch.load(_weights(run_dir / "trials" / str(parent)), weights_only=True)
        started = capture.first[rec["seed"]]
        assert started is not None and started.keys() == kept.keys()
        assert all(torch.equal(started[k], kept[k]) for k in kept)


# ------------------------------------------------------------------------------------------------- the key


def test_inherit_is_a_validated_key_that_keeps_older_runs_hash() -> None:
    import hashlib

    from mednas.config import task_to_dict
    from mednas.config._load import _ADDED_KEYS, _VOLATILE_KEYS

    plain = load_task(TASK)
    assert plain.search.inherit is False
    # A run made before the key existed (its resolved task has no `search.inherit`) keeps its hash.
    old = task_to_dict(plain)
    for dotted in (*_VOLATILE_KEYS, *_ADDED_KEYS):
        *parents, last = dotted.split(".")
        node = old
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    old["objective"]["latency"] = {"input_shape": None, "repeats": 10}  # as before the latency runtimes
    before = hashlib.sha256(json.dumps(old, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert "search.inherit" in _ADDED_KEYS and config_hash(plain) == before
    assert config_hash(load_task(TASK, overrides=["search.inherit=false"])) == config_hash(plain)
    assert config_hash(load_task(TASK, overrides=["search.inherit=true"])) != config_hash(plain)
    with pytest.raises(ConfigError, match=r"search\.inherit: Input should be a valid boolean"):
        load_task(TASK, overrides=["search.inherit=sometimes"])
    # Re-evaluation retrains from scratch with other seeds: it would not repeat an inherited training.
    with pytest.raises(ConfigError, match="inherit: true with reevaluate.top"):
        load_task(TASK, overrides=["search.inherit=true", "search.reevaluate.top=2"])


# ------------------------------------------------------------------------------------------ on the ladder


def test_ladder_trials_start_rung_0_from_an_earlier_finished_trial(
    inherit_ladder: tuple[Path, dict[int, dict], _Capture],
) -> None:
    run_dir, records, capture = inherit_ladder
    trained = _trained(records)
    assert len(trained) >= 5
    first = min(trained)
    assert trained[first]["parent"] is None and trained[first]["rungs"][0]["start"] == "fresh"
    later = [r for n, r in trained.items() if n != first]
    assert later and all(r["parent"] is not None for r in later)
    assert all(r["rungs"][0]["start"] == "inherited" for r in later)
    assert all(r["rungs"][1]["start"] == "carried" for r in later if len(r["rungs"]) > 1)
    _assert_started_from_parents(run_dir, records, capture)
    # Every complete trial kept its final (top-rung) weights for its family's later candidates.
    for n, rec in trained.items():
        if rec["state"] == "complete":
            assert (run_dir / "trials" / str(n) / "parent.pt").is_file()
    log = (run_dir / "trials" / str(later[0]["trial"]) / "log.txt").read_text()
    assert f"inherit: starting from trial {later[0]['parent']}'s weights" in log


def test_the_recorded_fraction_is_what_the_transfer_copied(
    inherit_ladder: tuple[Path, dict[int, dict], _Capture],
) -> None:
    import torch

    from mednas.spaces import create_space
    from mednas.spec import ArchSpec, build
    from mednas.study._inherit import _weights
    from mednas.train import transfer_weights

    run_dir, records, _ = inherit_ladder
    for n, rec in _trained(records).items():
        if rec["parent"] is None:
            continue
        spec = ArchSpec.from_dict(json.loads((run_dir / "trials" / str(n) / "spec.json").read_text()))
        net = build(create_space("resnet").adapt_to_shape(spec, (16, 16)))
        kept = torch.load(_weights(run_dir / "trials" / str(rec["parent"])), weights_only=True)
        assert transfer_weights(kept, net).fraction == pytest.approx(rec["inherited_fraction"])


def test_choose_parent_takes_the_most_similar_with_weights(
    inherit_ladder: tuple[Path, dict[int, dict], _Capture], tmp_path: Path
) -> None:
    from mednas.rundir import RunDir
    from mednas.spec import ArchSpec
    from mednas.study._inherit import choose_parent

    source, records, _ = inherit_ladder
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns("*.db", "*.db-*"))
    rd, task = RunDir(run_dir), load_task(TASK, overrides=DATA + LADDER + ["search.inherit=true"])
    last = max(_trained(records))
    spec = ArchSpec.from_dict(json.loads((run_dir / "trials" / str(last) / "spec.json").read_text()))
    chosen = choose_parent(rd, task, spec, last)
    assert chosen is not None and chosen.parent != last and 0 < chosen.fraction <= 1
    assert chosen.path == f"trials/{chosen.parent}/parent.pt"
    # A trial is never its own parent, though its own weights would fit it entirely.
    own = ArchSpec.from_dict(json.loads((run_dir / "trials" / str(chosen.parent) / "spec.json").read_text()))
    assert choose_parent(rd, task, own, chosen.parent).parent != chosen.parent
    # A parent whose weights are gone (or cannot be read) gives way to the next most similar.
    (run_dir / "trials" / str(chosen.parent) / "parent.pt").write_bytes(b"not a state dict")
    (run_dir / "trials" / str(chosen.parent) / "model.pt").unlink(missing_ok=True)
    second = choose_parent(rd, task, spec, last)
    assert second is not None and second.parent not in (chosen.parent, last)
    # A retry keeps its original's parent where that still has weights, however similar the others are.
    others = [n for n in _trained(records) if n not in (last, chosen.parent, second.parent)]
    others = [n for n in others if (run_dir / "trials" / str(n) / "parent.pt").is_file()]
    assert others, "five trials: a third earlier one kept its weights"
    assert choose_parent(rd, task, spec, last, prefer=others[0]).parent == others[0]
    # Another family's candidates lend nothing.
    assert choose_parent(rd, task, dataclasses.replace(spec, family="efficientnet"), last) is None


# --------------------------------------------------------------------------------- off, and the flat proxy


def test_without_inherit_no_trial_has_a_parent(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    records, capture = _search(run_dir, LADDER, 2)
    # Two candidates (a continuation of a paused one trains on the same candidate's weights).
    assert len([r for r in _trained(records).values() if not r.get("continues")]) == 2
    for rec in records.values():
        assert "parent" not in rec and "inherited_fraction" not in rec
        assert rec["rungs"][0]["start"] == "fresh"
    assert all(state is None for state in capture.first.values())
    assert not list(run_dir.glob("trials/*/parent.pt"))


def test_flat_trials_start_from_a_parent(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    records, capture = _search(run_dir, ["search.inherit=true", "search.pruner.name=none"], 3)
    trained = _trained(records)
    assert len(trained) >= 2 and "fidelity" not in trained[min(trained)]
    assert trained[min(trained)]["parent"] is None
    assert all(r["parent"] is not None for n, r in trained.items() if n != min(trained))
    _assert_started_from_parents(run_dir, records, capture)


# ----------------------------------------------------------------------------------------------- the report


def test_the_trials_table_names_parent_and_inherited_share(
    inherit_ladder: tuple[Path, dict[int, dict], _Capture],
) -> None:
    from mednas.reporting._report import _inheritance_line, _Page, _Run
    from mednas.rundir import RunDir

    run_dir, records, _ = inherit_ladder
    page = _Page(_Run.load(RunDir(run_dir), storage=None, study_name=None))
    table = page.trials()
    assert "<th>parent (inherited)</th>" in table and ">fresh</td>" in table
    for rec in _trained(records).values():
        if rec["parent"] is not None:
            cell = f"<td class='num' data-sort='{rec['parent']}'>{rec['parent']} <span class='s'>"
            assert cell + f"({rec['inherited_fraction']:.0%})</span></td>" in table
    line = _inheritance_line(page._climbs(2))
    # One line per candidate: a trial paused and promoted later is drawn (and counted) by its continuation.
    promoted = {r["continues"]["trial"] for r in records.values() if r.get("continues")}
    candidates = [n for n in _trained(records) if n not in promoted]
    assert f"{len(candidates) - 1} of {len(candidates)} trial(s) started rung 0" in line
