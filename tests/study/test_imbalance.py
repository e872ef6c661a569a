"""Class-imbalance remedies are not stacked: the search chooses a weighted loss, balanced sampling, or neither."""

from __future__ import annotations

import optuna
import pytest

from mednas.config import load_task
from mednas.errors import ConfigError
from mednas.study import suggest_imbalance
from mednas.testing import tiny_task
from mednas.train._losses import resolve_loss, stacks_imbalance_remedies


def _task(problem: str = "classification", *, search: dict | None = None, training: dict | None = None):  # noqa: ANN202
    return load_task(tiny_task(problem, "unused.json", search=search or {}, training=training or {}))


def _combos(task, n: int = 60) -> set[tuple[str, str]]:  # noqa: ANN001
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(n):
        trial = study.ask()
        seen.add(suggest_imbalance(trial, task))
        study.tell(trial, 0.0)
    return seen


def test_search_never_stacks_a_weighted_loss_with_balanced_sampling() -> None:
    task = _task(search={"losses": ["ce", "weighted_ce", "focal"], "sampling": ["uniform", "balanced"]})
    combos = _combos(task)
    assert combos == {("ce", "uniform"), ("ce", "balanced"), ("weighted_ce", "uniform"), ("focal", "uniform")}
    assert not any(stacks_imbalance_remedies(loss, "classification", s) for loss, s in combos)


def test_auto_loss_searched_with_sampling_is_one_remedy_or_the_other() -> None:
    combos = _combos(_task(search={"sampling": ["uniform", "balanced"]}))
    assert combos == {("weighted_ce", "uniform"), ("ce", "balanced")}


def test_stacking_only_when_asked_for() -> None:
    task = _task(
        search={"losses": ["weighted_ce"], "sampling": ["uniform", "balanced"]},
        training={"stack_imbalance_remedies": True},
    )
    assert ("weighted_ce", "balanced") in _combos(task)
    _task(training={"loss": "weighted_ce", "sampling": "balanced", "stack_imbalance_remedies": True})


@pytest.mark.parametrize(
    "settings",
    [
        {"training": {"loss": "weighted_ce", "sampling": "balanced"}},
        {"training": {"sampling": "balanced"}, "search": {"losses": ["ce", "focal"]}},
        {"search": {"losses": ["weighted_ce"], "sampling": ["balanced"]}},
    ],
)
def test_settings_that_always_stack_are_refused_with_the_fix(settings: dict) -> None:
    with pytest.raises(ConfigError, match="corrected twice.*stack_imbalance_remedies"):
        _task(**settings)


def test_auto_resolves_by_sampling_and_segmentation_is_unaffected() -> None:
    assert resolve_loss("auto", "classification", "uniform") == "weighted_ce"
    assert resolve_loss("auto", "classification", "balanced") == "ce"
    assert resolve_loss("auto", "segmentation", "balanced") == "dice_ce"
    assert resolve_loss("focal", "classification", "balanced") == "focal"
    _task(training={"sampling": "balanced"})  # auto + balanced: plain CE, accepted
    combos = _combos(
        _task("segmentation", search={"losses": ["dice_ce", "focal"], "sampling": ["uniform", "balanced"]})
    )
    assert ("focal", "balanced") in combos  # segmentation losses carry no class weights
