"""Candidates that never start learning are flagged in their trial record and pruned at the check epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mednas import api
from mednas.testing import tiny_task


class _DeadOutput(torch.nn.Module):
    """A candidate whose output layer is dead: logits are always 0, so nothing it learns reaches the loss."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * 0.0


@pytest.fixture
def dead_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    import mednas.spec

    real = mednas.spec.build
    monkeypatch.setattr(mednas.spec, "build", lambda spec: _DeadOutput(real(spec)))


@pytest.mark.parametrize(
    ("objective", "check", "state"),
    [
        ({"metric": "auroc"}, 2, "pruned"),
        ({"metric": "auroc", "secondary": ["params"]}, 2, "pruned"),
        ({"metric": "auroc"}, 0, "complete"),
    ],
    ids=["single-objective", "multi-objective", "check-off"],
)
def test_dead_candidate_is_flagged_and_pruned_early(
    tmp_path: Path, tiny_cls_datalist: Path, dead_candidates: None, objective: dict, check: int, state: str
) -> None:
    import optuna

    task = tiny_task(
        "classification",
        tiny_cls_datalist,
        objective=objective,
        proxy={"shape": [16, 16], "epochs": 4},
        search={"n_trials": 1, "dead_check_epoch": check, "pruner": "none"},
    )
    summary = api.search(task, run_dir=tmp_path / "run", show_progress=False).summary
    rec = json.loads((tmp_path / "run" / "trials" / "0" / "metrics.json").read_text())
    assert rec["state"] == state and rec["learned"] is False
    assert rec["not_learning"].startswith("training loss flat (0.693 -> 0.693")
    assert "predictions constant across" in rec["not_learning"]
    if state == "pruned":
        assert (
            rec["reason"].startswith("not learning: training loss flat")
            and "checked at epoch 2" in rec["reason"]
        )
        assert len(rec["history"]) == 2  # stopped at the check epoch, not after all 4
    else:
        assert rec["epochs"] == 4
    study = optuna.load_study(study_name="tiny-cls", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    attrs = study.trials[0].user_attrs
    # The ranking reads `learned` from the storage; why it did not learn is in the record only.
    assert attrs["learned"] is False and "not_learning" not in attrs
    assert summary["n_trials"]["not_learning"] == 1
    assert "best" not in summary or summary["best"]["learned"] is False
    from mednas.reporting import format_status, read_status

    status = read_status(tmp_path / "run")
    assert (
        status["counts"]["not_learning"] == 1 and status["trials"][0]["not_learning"] == rec["not_learning"]
    )
    text = format_status(status)
    assert "1 never started learning" in text
    assert (
        "not learning: training loss flat" if state == "pruned" else "never started learning"
    ) in text.splitlines()[-1]
