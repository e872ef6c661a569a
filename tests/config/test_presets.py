"""Every shipped preset (package data ``mednas/configs``; ``configs/`` in the repository links there) loads, alone or
stacked onto a demo task, with the effect it documents; presets are found by name from any working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from mednas.config import load_task, resolve_preset, shipped_presets
from mednas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "mednas" / "configs"
SEG_ONLY = {"lesion-detection.yaml", "measurement.yaml"}
FULL_OBJECTIVES = {
    "screening.yaml",
    "triage.yaml",
    "cost-weighted.yaml",
    "lesion-detection.yaml",
    "measurement.yaml",
}


@pytest.mark.parametrize("preset", sorted(p.name for p in (PRESETS / "objectives").glob("*.yaml")))
def test_objective_presets_stack_onto_the_demo_tasks(preset: str) -> None:
    task_file = ROOT / "tasks" / ("demo-mri-lesion.yaml" if preset in SEG_ONLY else "demo-xray-nodule.yaml")
    task = load_task(task_file, presets=[PRESETS / "objectives" / preset])
    original = load_task(task_file)
    # The task's own objective terms always win over a preset's (presets merge under the task).
    assert task.objective.terms == original.objective.terms


@pytest.mark.parametrize("preset", sorted(FULL_OBJECTIVES))
def test_full_objective_presets_supply_a_missing_objective(preset: str, tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load(
        (
            ROOT / "tasks" / ("demo-mri-lesion.yaml" if preset in SEG_ONLY else "demo-xray-nodule.yaml")
        ).read_text()
    )
    del data["objective"]
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(data))
    task = load_task(path, presets=[PRESETS / "objectives" / preset])
    expected = yaml.safe_load((PRESETS / "objectives" / preset).read_text())["objective"]
    first = expected["terms"][0]["metric"] if "terms" in expected else expected["metric"]
    assert task.objective.terms[0].metric == first


def test_stacked_presets_add_constraints_and_secondary_objectives() -> None:
    task = load_task(
        ROOT / "tasks" / "demo-xray-nodule.yaml",
        presets=["objectives/specificity-floor-and-budget", "objectives/small-model"],
    )
    assert [str(c) for c in task.objective.constraints] == ["specificity >= 0.9", "params <= 100000"]
    assert task.objective.names == ["sensitivity_at_specificity", "params"]
    assert task.objective.directions == ["maximize", "minimize"]


@pytest.mark.parametrize("preset", ["quick-cpu.yaml", "gpu-day.yaml"])
def test_budget_presets(preset: str) -> None:
    load_task(ROOT / "tasks" / "demo-xray-nodule.yaml", presets=[PRESETS / preset])


def test_presets_by_name_from_a_folder_outside_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    task_file = tmp_path / "project" / "task.yaml"
    task_file.parent.mkdir()
    task_file.write_text((ROOT / "tasks" / "demo-xray-nodule.yaml").read_text())
    data = yaml.safe_load(task_file.read_text())
    data.pop("objective")
    (tmp_path / "project" / "bare.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    assert load_task(task_file, presets=["quick-cpu"]).search.n_trials == 10
    assert load_task(task_file, presets=["gpu-day"]).search.reevaluate.top == 8
    screening = load_task(tmp_path / "project" / "bare.yaml", presets=["objectives/screening"])
    assert screening.objective.terms[0].metric == "sensitivity_at_specificity"
    assert (
        load_task(tmp_path / "project" / "bare.yaml", presets=["screening"]) == screening
    )  # a unique file name
    # A path still works, and wins over a name.
    (tmp_path / "mine.yaml").write_text("search: {n_trials: 3}\n")
    assert load_task(task_file, presets=["mine.yaml"]).search.n_trials == 3
    assert load_task(task_file, presets=[tmp_path / "mine.yaml", "quick-cpu"]).search.n_trials == 10
    # A project's own configs/ folder is looked up before the shipped presets.
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "quick-cpu.yaml").write_text("search: {n_trials: 2}\n")
    assert load_task(task_file, presets=["quick-cpu"]).search.n_trials == 2


def test_an_unknown_preset_lists_the_known_ones_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        resolve_preset("quick-cpi")
    msg = str(info.value)
    assert "\n" not in msg and "did you mean 'quick-cpu'" in msg
    assert msg.endswith("known: " + ", ".join(sorted(shipped_presets())))
    assert {"quick-cpu", "gpu-day", "objectives/screening"} <= set(shipped_presets())
    # The repository's path form, outside the repository: the error names the preset that works anywhere.
    with pytest.raises(ConfigError, match=r"configs/quick-cpu.yaml: file not found; .* --preset quick-cpu$"):
        resolve_preset("configs/quick-cpu.yaml")
    with pytest.raises(ConfigError, match="neither a YAML file nor a preset name"):
        resolve_preset("../secrets")


def test_the_repository_configs_folder_is_the_shipped_presets() -> None:
    from mednas.config import shipped_targets

    assert (ROOT / "configs").resolve() == PRESETS.resolve()
    # Deployment targets (configs/targets/) are chosen with the task's `target:` key, not as presets.
    assert sorted(
        p.relative_to(PRESETS).with_suffix("").as_posix()
        for p in PRESETS.rglob("*.yaml")
        if p.parent.name != "targets"
    ) == sorted(shipped_presets())
    assert sorted(p.stem for p in (PRESETS / "targets").glob("*.yaml")) == sorted(shipped_targets())
