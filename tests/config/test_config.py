"""Task files: validation, did-you-mean errors, presets under the task, overrides, ${VAR}, run identity."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mednas.config import TaskConfig, config_hash, load_task
from mednas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, data: dict, name: str = "task.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _base() -> dict:
    return {
        "name": "t",
        "problem": "classification",
        "spatial_dims": 2,
        "data": {"format": "datalist", "path": "data/datalist.json"},
        "labels": {"names": ["normal", "finding"]},
        "objective": {"metric": "sensitivity_at_specificity", "min_specificity": 0.9},
        "search": {"spaces": ["resnet"]},
    }


@pytest.mark.parametrize("name", ["demo-xray-nodule", "demo-mri-lesion"])
def test_demo_tasks_validate(name: str) -> None:
    task = load_task(ROOT / "tasks" / f"{name}.yaml")
    assert isinstance(task, TaskConfig)
    assert task.labels.finding_indices == [1]


def test_models_are_frozen(tmp_path: Path) -> None:
    task = load_task(_write(tmp_path, _base()))
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError for frozen models
        task.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("search.n_trails=3", "search.n_trails: unknown key (did you mean 'n_trials'?)"),
        (
            "objective.min_specifcity=0.8",
            "objective.min_specifcity: unknown key (did you mean 'min_specificity'?)",
        ),
        ("search.pruner=hyperbnd", "did you mean 'hyperband'?"),
        ("data.format=datalst", "did you mean 'datalist'?"),
        ("objective.metric=sensitivity_at_specificty", "did you mean 'sensitivity_at_specificity'?"),
        ("labels.findings=[findng]", "did you mean 'finding'?"),
        ("trainig.lr=0.1", "trainig: unknown key (did you mean 'training'?)"),
    ],
)
def test_unknown_keys_name_the_path_and_suggest(tmp_path: Path, override: str, expected: str) -> None:
    path = _write(tmp_path, _base())
    with pytest.raises(ConfigError) as info:
        load_task(path, overrides=[override])
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_missing_key_and_wrong_type(tmp_path: Path) -> None:
    data = _base()
    del data["labels"]
    with pytest.raises(ConfigError, match=r"labels: required key is missing"):
        load_task(_write(tmp_path, data))
    with pytest.raises(ConfigError, match=r"search.n_trials"):
        load_task(_write(tmp_path, _base()), overrides=["search.n_trials=many"])


def test_objective_must_fit_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a segmentation task"):
        load_task(_write(tmp_path, _base()), overrides=["objective={metric: dice}"])


def test_presets_merge_under_the_task_and_set_overrides_both(tmp_path: Path) -> None:
    preset = _write(tmp_path, {"search": {"n_trials": 7, "seed": 5}, "proxy": {"epochs": 2}}, "preset.yaml")
    data = _base()
    data["search"]["seed"] = 1
    task = load_task(_write(tmp_path, data), presets=[preset])
    assert task.search.n_trials == 7  # from the preset
    assert task.search.seed == 1  # the task wins over the preset
    assert task.proxy.epochs == 2
    task = load_task(
        _write(tmp_path, data), presets=[preset], overrides=["search.seed=9", "proxy.shape=[32, 32]"]
    )
    assert task.search.seed == 9
    assert task.proxy.shape == [32, 32]


def test_preset_by_name_and_unknown_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    task = load_task(ROOT / "tasks" / "demo-xray-nodule.yaml", presets=["quick-cpu"])
    assert task.search.n_trials == 10
    with pytest.raises(ConfigError, match="did you mean 'quick-cpu'"):
        load_task(ROOT / "tasks" / "demo-xray-nodule.yaml", presets=["quick-cpi"])


def test_paths_are_relative_to_the_task_file_and_expand_vars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "tasks"
    sub.mkdir()
    task = load_task(_write(sub, _base()))
    assert task.data.path == str((sub / "data" / "datalist.json").resolve())
    monkeypatch.setenv("MY_DATA", str(tmp_path / "elsewhere"))
    data = _base()
    data["data"]["path"] = "${MY_DATA}/list.json"
    assert load_task(_write(sub, data)).data.path == str(tmp_path / "elsewhere" / "list.json")
    data["data"]["path"] = "${NOT_SET_ANYWHERE_42}/list.json"
    with pytest.raises(
        ConfigError, match=r"data.path: environment variable \$\{NOT_SET_ANYWHERE_42\} is not set"
    ):
        load_task(_write(sub, data))


def test_bad_yaml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_task(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="file not found"):
        load_task(tmp_path / "missing.yaml")


def test_config_hash_ignores_budget_but_not_search_space(tmp_path: Path) -> None:
    path = _write(tmp_path, _base())
    h = config_hash(load_task(path))
    assert config_hash(load_task(path, overrides=["search.n_trials=99", "device=cpu"])) == h
    assert config_hash(load_task(path, overrides=["search.spaces=[efficientnet]"])) != h
