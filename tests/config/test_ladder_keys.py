"""The ladder's task keys: ``search.fidelity`` and ``search.ladder`` (issue 17), their defaults and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mednas.config import config_hash, load_task
from mednas.errors import ConfigError

TASK_FILE = Path(__file__).resolve().parents[2] / "tasks" / "demo-xray-nodule.yaml"


def _task(tmp_path: Path) -> Path:
    path = tmp_path / "task.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "problem": "classification",
                "spatial_dims": 2,
                "data": {"format": "datalist", "path": "data/datalist.json"},
                "labels": {"names": ["normal", "finding"]},
                "objective": {"metric": "auroc"},
                "search": {"spaces": ["resnet"]},
            }
        )
    )
    return path


def test_defaults_are_the_flat_proxy_and_a_derived_ladder(tmp_path: Path) -> None:
    task = load_task(_task(tmp_path))
    assert task.search.fidelity == "flat"
    assert task.search.ladder.rungs is None
    assert task.search.ladder.eta == 3
    assert task.search.ladder.brackets == "successive_halving"


def test_ladder_keys_load_and_belong_to_the_run_identity(tmp_path: Path) -> None:
    path = _task(tmp_path)
    task = load_task(
        path,
        overrides=[
            "search.fidelity=ladder",
            "search.ladder={rungs: [{scale: 0.25, epochs: 4}, {scale: 0.5, epochs: 4}, {scale: 1.0, epochs: 8}], "
            "eta: 2, brackets: hyperband}",
        ],
    )
    assert [(r.scale, r.epochs) for r in task.search.ladder.rungs or []] == [(0.25, 4), (0.5, 4), (1.0, 8)]
    assert task.search.ladder.eta == 2 and task.search.ladder.brackets == "hyperband"
    # A ladder search is another search than the flat one: never the same study.
    assert config_hash(task) != config_hash(load_task(path))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "search.ladder.rungs=[{scale: 0.5, epochs: 2}, {scale: 0.75, epochs: 2}]",
            "search.ladder.rungs: the last rung must have scale 1.0",
        ),
        (
            "search.ladder.rungs=[{scale: 0.5, epochs: 2}, {scale: 0.25, epochs: 2}, {scale: 1.0, epochs: 2}]",
            "search.ladder.rungs: rung scales must increase",
        ),
        ("search.ladder.rungs=[]", "search.ladder.rungs: the ladder needs at least one rung"),
        ("search.ladder.rungs=[{scale: 1.5, epochs: 2}]", "search.ladder.rungs[0].scale"),
        ("search.ladder.rungs=[{scale: 1.0, epochs: 0}]", "search.ladder.rungs[0].epochs"),
        ("search.ladder.rungs=[{scale: 1.0}]", "search.ladder.rungs[0].epochs: required key is missing"),
        ("search.ladder.eta=1", "search.ladder.eta"),
        ("search.ladder.brackets=hyperbnd", "did you mean 'hyperband'?"),
        ("search.ladder.promotion=defered", "did you mean 'deferred'?"),
        ("search.ladder.promotion=3", "search.ladder.promotion"),
        ("search.fidelity=ladders", "did you mean 'ladder'?"),
        ("search.ladder.rung=[]", "search.ladder.rung: unknown key (did you mean 'rungs'?)"),
        (
            "search.reevaluate.top=2",
            "search.reevaluate: re-evaluation retrains at the flat proxy and is not built for "
            "search.fidelity: ladder",
        ),
    ],
)
def test_bad_ladder_keys_are_one_line_errors_naming_the_key(
    tmp_path: Path, override: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_task(_task(tmp_path), overrides=["search.fidelity=ladder", override])
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_reevaluation_stays_available_to_the_flat_search(tmp_path: Path) -> None:
    assert load_task(_task(tmp_path), overrides=["search.reevaluate.top=2"]).search.reevaluate.top == 2


def test_the_new_keys_at_their_defaults_leave_the_config_hash_of_older_runs_alone() -> None:
    """A run made before `search.fidelity`/`search.ladder` existed keeps its hash, so it can be continued."""
    import hashlib
    import json

    from mednas.config import task_to_dict
    from mednas.config._load import _VOLATILE_KEYS

    task = load_task(TASK_FILE)
    old = task_to_dict(task)
    del (
        old["search"]["fidelity"],
        old["search"]["ladder"],
        old["search"]["inherit"],
    )  # what the task looked like before the keys existed
    # ... and before the latency runtimes (issue 18)
    old["objective"]["latency"] = {"input_shape": None, "repeats": 10}
    old.pop("target")
    for dotted in _VOLATILE_KEYS:
        *parents, last = dotted.split(".")
        node = old
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    before = hashlib.sha256(json.dumps(old, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert config_hash(task) == before
    assert config_hash(load_task(TASK_FILE, overrides=["search.fidelity=ladder"])) != before
    assert config_hash(load_task(TASK_FILE, overrides=["search.ladder.eta=2"])) != before


def test_an_older_ladder_run_without_the_promotion_key_keeps_its_hash() -> None:
    """`search.ladder.promotion` came after ladder runs existed: at its default it leaves their hash alone."""
    import hashlib
    import json

    from mednas.config import task_to_dict
    from mednas.config._load import _ADDED_KEYS, _VOLATILE_KEYS

    task = load_task(TASK_FILE, overrides=["search.fidelity=ladder", "search.ladder.eta=4"])
    old = task_to_dict(task)
    del old["search"]["ladder"]["promotion"]  # what an eta-4 ladder task looked like before the key existed
    old["search"].pop("inherit")
    # ... and before the latency runtimes (issue 18)
    old["objective"]["latency"] = {"input_shape": None, "repeats": 10}
    old.pop("target")
    for dotted in _VOLATILE_KEYS:
        *parents, last = dotted.split(".")
        node = old
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    assert "search.ladder.promotion" in _ADDED_KEYS
    before = hashlib.sha256(json.dumps(old, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert config_hash(task) == before
