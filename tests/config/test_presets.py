"""Every preset shipped in configs/ loads, alone or stacked onto a demo task, with the effect it documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from mednas.config import load_task

ROOT = Path(__file__).resolve().parents[2]
SEG_ONLY = {"lesion-detection.yaml", "measurement.yaml"}
FULL_OBJECTIVES = {"screening.yaml", "triage.yaml", "cost-weighted.yaml", "lesion-detection.yaml", "measurement.yaml"}


@pytest.mark.parametrize("preset", sorted(p.name for p in (ROOT / "configs" / "objectives").glob("*.yaml")))
def test_objective_presets_stack_onto_the_demo_tasks(preset: str) -> None:
    task_file = ROOT / "tasks" / ("demo-mri-lesion.yaml" if preset in SEG_ONLY else "demo-xray-nodule.yaml")
    task = load_task(task_file, presets=[ROOT / "configs" / "objectives" / preset])
    original = load_task(task_file)
    # The task's own objective terms always win over a preset's (presets merge under the task).
    assert task.objective.terms == original.objective.terms


@pytest.mark.parametrize("preset", sorted(FULL_OBJECTIVES))
def test_full_objective_presets_supply_a_missing_objective(preset: str, tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load((ROOT / "tasks" / ("demo-mri-lesion.yaml" if preset in SEG_ONLY else "demo-xray-nodule.yaml")).read_text())
    del data["objective"]
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(data))
    task = load_task(path, presets=[ROOT / "configs" / "objectives" / preset])
    expected = yaml.safe_load((ROOT / "configs" / "objectives" / preset).read_text())["objective"]
    first = expected["terms"][0]["metric"] if "terms" in expected else expected["metric"]
    assert task.objective.terms[0].metric == first


def test_stacked_presets_add_constraints_and_secondary_objectives() -> None:
    task = load_task(ROOT / "tasks" / "demo-xray-nodule.yaml",
                     presets=[ROOT / "configs/objectives/specificity-floor-and-budget.yaml", ROOT / "configs/objectives/small-model.yaml"])
    assert [str(c) for c in task.objective.constraints] == ["specificity >= 0.9", "params <= 100000"]
    assert task.objective.names == ["sensitivity_at_specificity", "params"]
    assert task.objective.directions == ["maximize", "minimize"]


@pytest.mark.parametrize("preset", ["quick-cpu.yaml", "gpu-day.yaml"])
def test_budget_presets(preset: str) -> None:
    load_task(ROOT / "tasks" / "demo-xray-nodule.yaml", presets=[ROOT / "configs" / preset])
