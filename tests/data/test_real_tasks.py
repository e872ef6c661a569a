"""The real-data tasks in ``tasks/`` run end to end on ``../shared/data`` with a tiny budget (pyradiomics lesions,
Colin27 brain extraction), reading the files in place through ``${MEDNAS_SHARED_DATA}``, and say everywhere that
their cases are augmented copies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mednas import api
from mednas.config import load_task
from mednas.data import load_layout
from mednas.errors import DataError
from mednas.testing import TINY_OPTIONS
from tests._shared_data import shared_data_dir

TASKS = Path(__file__).resolve().parents[2] / "tasks"
TINY = [
    "proxy.epochs=1",
    "proxy.shape=[16, 16, 16]",
    "training.shape=[32, 32, 16]",
    "training.batch_size=2",
    "search.spaces=[unet]",
    f"search.space_options={json.dumps({'unet': TINY_OPTIONS['unet']})}",
    "search.pruner=none",
]
# Few, coarse copies keep the test fast; 2 mm keeps breast1's 5 x 7 mm lesion, 4 mm would erase it (majority vote).
COPIES = {
    "real-pyradiomics-lesion": ["data.augment_copies=2", "data.augment_spacing=2"],
    "real-colin27-brain": ["data.augment_copies=3", "data.augment_spacing=4"],
}


@pytest.fixture
def shared_env(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> Path:
    root = shared_data_dir()
    monkeypatch.setenv("MEDNAS_SHARED_DATA", str(root))
    return root


@pytest.mark.parametrize(
    ("name", "sources", "modalities"),
    [("real-pyradiomics-lesion", 3, {"MR": 2, "CT": 1}), ("real-colin27-brain", 1, {"MR": 1})],
)
def test_task_files_point_at_the_shared_data(
    shared_env: Path, name: str, sources: int, modalities: dict
) -> None:
    task = load_task(TASKS / f"{name}.yaml")
    assert task.data.augment_copies > 0 and task.data.augment_group == "copy"
    dataset = load_layout(task, "salt")  # the sheet alone: no copies are made here
    assert len(dataset.cases) == sources
    for case in dataset.cases:
        assert Path(case.images[0]).is_file() and Path(case.images[0]).is_relative_to(shared_env)
        assert Path(str(case.label)).is_file()
    counts: dict[str, int] = {}
    for case in dataset.cases:
        counts[case.extra["modality"]] = counts.get(case.extra["modality"], 0) + 1
    assert counts == modalities
    readme = (TASKS / "README.md").read_text()
    assert f"{name}.yaml" in readme


def test_unset_data_variable_names_the_sheet_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDNAS_SHARED_DATA", raising=False)
    task = load_task(TASKS / "real-colin27-brain.yaml")
    with pytest.raises(
        DataError, match=r"colin27-brain.csv: row 2: environment variable \$\{MEDNAS_SHARED_DATA\} is not set"
    ):
        load_layout(task, "salt")


# Slow set (8-10 s for both): real searches on the real-data tasks; the tasks' validation stays in the fast set.
@pytest.mark.slow
@pytest.mark.parametrize(("name", "n_cases"), [("real-pyradiomics-lesion", 9), ("real-colin27-brain", 4)])
def test_real_task_search_end_to_end(shared_env: Path, tmp_path: Path, name: str, n_cases: int) -> None:
    run_dir = tmp_path / "run"
    result = api.search(
        TASKS / f"{name}.yaml",
        overrides=[*TINY, *COPIES[name]],
        run_dir=run_dir,
        n_trials=2,
        show_progress=False,
    )
    summary = result.summary
    n = summary["n_trials"]
    assert n["complete"] + n["pruned"] + n["infeasible"] == 2 and n["complete"] >= 1
    assert summary["data"]["n_cases"] == n_cases
    fp = json.loads((run_dir / "fingerprint.json").read_text())
    assert fp["augmentation"]["copies_per_case"] == n_cases // fp["augmentation"]["n_sources"] - 1
    assert fp["augmentation"]["group"] == "copy"
    assert "not generalisation to new subjects" in fp["augmentation"]["note"]
    assert fp["summary"]["cases_with_finding"] == n_cases
    splits = json.loads((run_dir / "splits.json").read_text())
    assert all(splits[s] for s in ("train", "val", "test"))
    assert "shared" not in (run_dir / "resolved.yaml").read_text().split("path:")[0]
    # The shared data is read in place: nothing of it is copied into the run directory.
    assert not [p for p in run_dir.rglob("*") if p.suffix in (".nrrd", ".gz")]
