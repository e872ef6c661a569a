"""The conformance checks pass every built-in and fail, saying why, on a deliberately broken plugin of each kind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from mednas.data import BaseLayout, dataset_from_entries
from mednas.data._cases import Dataset
from mednas.metrics import BaseMetricTerm, MetricInputs, list_metrics
from mednas.spaces import SpaceContext, TrialLike
from mednas.spaces._resnet import ResNetSpace
from mednas.spec import ArchSpec
from mednas.testing import check_layout, check_loss, check_metric_term, check_space, tiny_task
from mednas.train import BaseLoss, list_losses

# Keys a built-in term needs besides `metric` (the rest have defaults).
TERM_OPTIONS = {"expected_cost": {"cost_matrix": [[0, 1], [10, 0]]}}


@pytest.mark.parametrize("name", list_metrics())
def test_every_builtin_metric_term_conforms(name: str) -> None:
    check_metric_term(name, options=TERM_OPTIONS.get(name), seeds=(0, 1))


@pytest.mark.parametrize("name", list_losses())
def test_every_builtin_loss_conforms(name: str) -> None:
    check_loss(name)


def test_the_datalist_layout_conforms(tiny_cls_datalist: Path) -> None:
    check_layout("datalist", tiny_task("classification", tiny_cls_datalist))


# ------------------------------------------------------------------------------------ deliberately broken


class ErrorRate(BaseMetricTerm):
    """Broken: the share of wrong calls, declared higher-is-better."""

    name: ClassVar[str] = "broken_error_rate"

    def value(self, term: Any, inputs: MetricInputs) -> float:
        return float(np.mean((inputs.output >= 0.5) != inputs.truth.astype(bool)))


class LeakyLayout(BaseLayout):
    """Broken: lists cases under their raw patient identifiers instead of salted hashes."""

    name: ClassVar[str] = "datalist"

    def load(self, task: Any, salt: str, *, run_dir: str | os.PathLike[str] | None = None) -> Dataset:
        import dataclasses
        import json

        path = Path(task.data.path)
        entries = json.loads(path.read_text())["training"]
        dataset = dataset_from_entries(entries, task, salt, root=path.parent, source=str(path))
        raw = {str(path.parent / e["image"]): e["patient"] for e in entries}
        cases = tuple(dataclasses.replace(c, patient=raw[c.images[0]]) for c in dataset.cases)
        return dataclasses.replace(dataset, cases=cases)


class DetachedLoss(BaseLoss):
    """Broken: a cross-entropy value with no gradient path to the logits."""

    name: ClassVar[str] = "broken_detached"
    problems: ClassVar[tuple[str, ...]] = ("classification",)

    def build(self, problem: str, n_classes: int, class_weights: Any = None) -> Any:
        import torch

        def loss(logits: Any, target: Any) -> Any:
            value = torch.nn.functional.cross_entropy(logits, target).item()
            return torch.tensor(value, requires_grad=True)

        return loss


class UnprefixedSpace(ResNetSpace):
    """Broken: a parameter whose name does not start with the family's name."""

    name: ClassVar[str] = "broken_unprefixed"

    def sample(self, trial: TrialLike, ctx: SpaceContext) -> ArchSpec:
        trial.suggest_int("depth", 1, 2)
        spec = super().sample(trial, ctx)
        return ArchSpec(
            spec.target, dict(spec.kwargs), self.name, spec.spatial_dims, spec.in_channels, spec.out_channels
        )


def test_check_metric_term_fails_on_a_term_that_rewards_inverted_predictions() -> None:
    with pytest.raises(
        AssertionError,
        match=r"broken_error_rate seed 0: perfect predictions score 0 and inverted ones 1: "
        r"with direction \+1 the perfect ones must score better",
    ):
        check_metric_term(ErrorRate)


def test_check_layout_fails_on_a_layout_that_leaks_patient_identifiers(tiny_cls_datalist: Path) -> None:
    with pytest.raises(
        AssertionError, match=r"datalist case c-[0-9a-f]{12}: the patient must be a salted hash .*got 'toy-"
    ):
        check_layout(LeakyLayout, tiny_task("classification", tiny_cls_datalist), read=False)


def test_check_loss_fails_on_a_loss_detached_from_the_logits() -> None:
    with pytest.raises(
        AssertionError,
        match=r"broken_detached classification: no finite, non-zero gradient reaches the "
        r"logits \(is the loss detached from them\?\)",
    ):
        check_loss(DetachedLoss)


def test_check_space_fails_on_a_space_with_unprefixed_parameters() -> None:
    with pytest.raises(
        AssertionError, match=r"parameter names must start with 'broken_unprefixed\.': \['depth'"
    ):
        check_space(
            UnprefixedSpace(**{"max_depth": 1, "min_width": 2, "max_width": 16}),
            spatial_dims=(2,),
            seeds=(0,),
            run=False,
        )


def test_checks_refuse_an_unregistered_class() -> None:
    class Nameless(BaseLoss):
        problems: ClassVar[tuple[str, ...]] = ("classification",)

        def build(self, problem: str, n_classes: int, class_weights: Any = None) -> Any:
            raise AssertionError("not reached")

    with pytest.raises(AssertionError, match=r"Nameless has no name: register it with @register_loss"):
        check_loss(Nameless)
