"""Conformance checks for metric terms, dataset layouts and losses (search spaces: :func:`check_space`).

A plugin's own tests call these with its class: each raises ``AssertionError`` naming the plugin and the first
property that does not hold, so a broken plugin fails in its author's test suite rather than in a user's
search. :func:`fresh_plugins` lets a test install or inject plugins and see them picked up.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["check_layout", "check_loss", "check_metric_term", "fresh_plugins"]

_PROBLEMS = ("classification", "segmentation")


@contextmanager
def fresh_plugins() -> Iterator[None]:
    """Within the block, every extension point reads its entry-point group again on next use; on exit, restore.

    For tests that install a plugin package (or inject entry points) after mednas has loaded its plugins:
    inside the block the registries hold only the built-ins until a name is looked up.

    Example:
        >>> from mednas.spaces import list_spaces
        >>> with fresh_plugins():
        ...     "resnet" in list_spaces()
        True
    """
    from mednas.data._layouts_base import LAYOUTS
    from mednas.metrics._terms import METRICS
    from mednas.spaces._registry import SPACES
    from mednas.train._losses import LOSSES

    with SPACES.isolated(), METRICS.isolated(), LAYOUTS.isolated(), LOSSES.isolated():
        yield


def _registered_class(item: Any, registry: Any, base: type, decorator: str) -> type:
    cls = registry.get(item) if isinstance(item, str) else item if isinstance(item, type) else type(item)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise AssertionError(f"{cls!r} is not a {base.__name__} subclass")
    if not cls.__dict__.get("name"):
        raise AssertionError(f"{cls.__name__} has no name: register it with @{decorator}")
    return cls


def _expect(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise AssertionError(f"{where}: {message}")


# ------------------------------------------------------------------------------------------------ metric terms


def check_metric_term(
    term: Any,
    *,
    options: Mapping[str, Any] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    n_cases: int = 24,
) -> None:
    """Check that a metric term honours the mednas contract; raise ``AssertionError`` saying where not.

    Checks: a registered name, a known ``problem``, ``direction`` +1 or -1; its ``config`` model accepts
    ``{"metric": name, **options}``, rejects unknown keys and survives a JSON round trip; on random cases (both
    classes present) :meth:`~mednas.metrics.BaseMetricTerm.value` returns a finite float that does not depend
    on the order of the cases and is the same when computed twice; perfect predictions score better (in the
    term's direction) than inverted ones; and a vectorised :meth:`~mednas.metrics.BaseMetricTerm.resampled`,
    where given, agrees with ``value`` on every resample.

    Args:
        term: The class, an instance, or its registry name.
        options: Keys of the term's task-file entry besides ``metric`` (default: the model's defaults).
        seeds: Seeds of the random cases, one check each.
        n_cases: Cases per sample.

    Example:
        >>> check_metric_term("auroc", seeds=(0,))
    """
    from mednas.config._models import MetricTermConfig
    from mednas.metrics._terms import METRICS, BaseMetricTerm

    cls = _registered_class(term, METRICS, BaseMetricTerm, "register_metric")
    name = cls.name
    _expect(cls.problem in _PROBLEMS, name, f"problem must be one of {_PROBLEMS}, got {cls.problem!r}")
    _expect(cls.direction in (1, -1), name, f"direction must be +1 or -1, got {cls.direction!r}")
    _expect(
        isinstance(cls.config, type) and issubclass(cls.config, MetricTermConfig),
        name,
        "config must be a mednas.config._models.MetricTermConfig subclass",
    )
    entry = _check_term_config(cls, name, dict(options or {}))
    instance = cls()
    for seed in seeds:
        where = f"{name} seed {seed}"
        rng = np.random.default_rng(seed)
        if cls.problem == "classification":
            _check_classification_term(instance, entry, rng, n_cases, where)
        else:
            _check_segmentation_term(instance, entry, rng, max(4, n_cases // 4), where)


def _check_term_config(cls: Any, name: str, options: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    try:
        entry = cls.config.model_validate({"metric": name, **options})
    except ValidationError as err:
        raise AssertionError(
            f"{name}: config rejects {{'metric': {name!r}, ...}}: {err.errors()[0]['msg']}"
        ) from None
    _expect(entry.metric == name, name, f"config gives metric {entry.metric!r}")
    dumped = entry.model_dump(mode="json")
    _expect(
        cls.config.model_validate(json.loads(json.dumps(dumped))) == entry,
        name,
        "config does not survive a JSON round trip",
    )
    try:
        cls.config.model_validate({"metric": name, **options, "no_such_key": 1})
    except ValidationError:
        return entry
    raise AssertionError(f"{name}: config accepts an unknown key (derive it from MetricTermConfig)")


def _same(a: float, b: float, tol: float = 1e-9) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def _finite_float(value: Any, where: str, what: str) -> float:
    _expect(
        isinstance(value, (float, np.floating)) and not isinstance(value, bool),
        where,
        f"value() on {what} returned {type(value).__name__}, not a float",
    )
    _expect(
        math.isfinite(float(value)),
        where,
        f"value() on {what} is {value} (cases of both classes are present)",
    )
    return float(value)


def _check_classification_term(
    instance: Any, entry: Any, rng: np.random.Generator, n: int, where: str
) -> None:
    from mednas.metrics._terms import MetricInputs

    truth = np.zeros(n, dtype=int)
    truth[rng.permutation(n)[: n // 2]] = 1
    perfect = np.where(truth == 1, 0.9, 0.1)
    noisy = np.clip(rng.uniform(size=n), 0.0, 1.0)

    def value(score: np.ndarray, order: np.ndarray | None = None, fixed: bool = False) -> Any:
        idx = np.arange(n) if order is None else order
        inputs = MetricInputs(
            "classification", truth[idx], score[idx], threshold=0.5, fixed=fixed, findings=(1,)
        )
        return instance.value(entry, inputs)

    good = _finite_float(value(perfect), where, "perfect predictions")
    bad = _finite_float(value(1.0 - perfect), where, "inverted predictions")
    some = _finite_float(value(noisy), where, "random predictions")
    _finite_float(value(noisy, fixed=True), where, "random predictions at a fixed threshold")
    _expect(_same(some, float(value(noisy))), where, "value() differs between two calls on the same cases")
    _expect(
        _same(some, float(value(noisy, rng.permutation(n)))),
        where,
        "value() depends on the order of the cases",
    )
    _expect(
        instance.direction * (good - bad) > 0,
        where,
        f"perfect predictions score {good:g} and inverted ones {bad:g}: with direction {instance.direction:+d} "
        "the perfect ones must score better",
    )
    _check_resampled(instance, entry, truth, noisy, rng, where)


def _check_resampled(
    instance: Any, entry: Any, truth: np.ndarray, score: np.ndarray, rng: np.random.Generator, where: str
) -> None:
    from mednas.metrics._resampled import Resamples
    from mednas.metrics._terms import MetricInputs

    n = len(truth)
    draws = rng.integers(0, n, size=(8, n))
    weights = np.stack([np.bincount(d, minlength=n) for d in draws]).astype(float)
    vectorised = instance.resampled(entry, Resamples(weights, truth, score, 0.5))
    if vectorised is None:
        return
    vectorised = np.asarray(vectorised, dtype=float)
    _expect(
        vectorised.shape == (len(draws),),
        where,
        f"resampled() gives shape {vectorised.shape}, expected ({len(draws)},)",
    )
    for b, d in enumerate(draws):
        one = float(
            instance.value(
                entry, MetricInputs("classification", truth[d], score[d], threshold=0.5, findings=(1,))
            )
        )
        _expect(
            _same(one, float(vectorised[b]), 1e-7),
            where,
            f"resampled() gives {vectorised[b]:g} on resample {b}, value() on its cases gives {one:g}",
        )


def _check_segmentation_term(instance: Any, entry: Any, rng: np.random.Generator, n: int, where: str) -> None:
    from mednas.metrics._objective import case_stats
    from mednas.metrics._terms import MetricInputs

    labels = np.zeros((n, 24, 25), dtype=np.uint8)
    grid = np.mgrid[0:24, 0:25]
    for i in range(n):
        for _ in range(1 + i % 2):
            c = rng.uniform(5, 19, size=2)
            labels[i][((grid[0] - c[0]) ** 2 + (grid[1] - c[1]) ** 2) <= rng.uniform(2, 4) ** 2] = 1

    def value(pred: np.ndarray, order: np.ndarray | None = None) -> Any:
        idx = np.arange(n) if order is None else order
        stats = case_stats(pred[idx], labels[idx], (1,), "any")
        return instance.value(
            entry, MetricInputs("segmentation", labels[idx], pred[idx], findings=(1,), case_stats=stats)
        )

    inverted = (1 - labels).astype(np.uint8)
    good = _finite_float(value(labels), where, "perfect predictions")
    bad = _finite_float(value(inverted), where, "inverted predictions")
    _expect(_same(good, float(value(labels))), where, "value() differs between two calls on the same cases")
    _expect(
        _same(bad, float(value(inverted, rng.permutation(n)))),
        where,
        "value() depends on the order of the cases",
    )
    _expect(
        instance.direction * (good - bad) > 0,
        where,
        f"perfect predictions score {good:g} and inverted ones {bad:g}: with direction {instance.direction:+d} "
        "the perfect ones must score better",
    )


# ------------------------------------------------------------------------------------------------- layouts

_CASE_KEY = re.compile(r"^c-[0-9a-f]{12}$")
_PATIENT_KEY = re.compile(r"^p-[0-9a-f]{12}$")


def check_layout(layout: Any, task: Any, *, read: bool = True) -> None:
    """Check that a dataset layout honours the mednas contract; raise ``AssertionError`` saying where not.

    Loads the task's dataset three times (twice with one salt, once with another) and checks: a non-empty
    :class:`~mednas.data.Dataset` of cases sorted by key with unique keys; the same cases for the same salt;
    case and patient names that are salted hashes (``c-``/``p-`` and 12 hex digits, all different under
    another salt) while the salt-free order key stays, so seeded splits do not depend on the run directory;
    labels that fit the task (a declared class index, or an existing mask file); and (with ``read``) that
    :func:`mednas.io.read_image` reads the first case.

    Args:
        layout: The class, an instance, or its registry name.
        task: A task (or task mapping) whose ``data.format`` is the layout and whose data it can read.
        read: Read the first case's image and label.
    """
    from mednas.config import TaskConfig, load_task
    from mednas.data._cases import Dataset
    from mednas.data._layouts_base import LAYOUTS, BaseLayout

    cls = _registered_class(layout, LAYOUTS, BaseLayout, "register_layout")
    name = cls.name
    cfg = task if isinstance(task, TaskConfig) else load_task(dict(task))
    _expect(cfg.data.format == name, name, f"the task's data.format is {cfg.data.format!r}")
    _expect(isinstance(cls.needs_path, bool), name, "needs_path must be True or False")
    instance = cls()
    first, again, other = (instance.load(cfg, salt) for salt in ("0" * 32, "0" * 32, "1" * 32))
    for dataset in (first, again, other):
        _expect(
            isinstance(dataset, Dataset),
            name,
            f"load() returned {type(dataset).__name__}, not mednas.data.Dataset",
        )
    _check_cases(first.cases, cfg, name)
    _expect(
        [(c.key, c.patient, c.images, c.label) for c in first.cases]
        == [(c.key, c.patient, c.images, c.label) for c in again.cases],
        name,
        "two loads with the same salt list different cases",
    )
    _expect(len(other.cases) == len(first.cases), name, "another salt changes the number of cases")
    _expect(
        not {c.key for c in first.cases} & {c.key for c in other.cases},
        name,
        "case keys do not depend on the salt (name them with mednas.data.hash_id)",
    )
    _expect(
        not {c.patient for c in first.cases} & {c.patient for c in other.cases},
        name,
        "patient names do not depend on the salt (name them with mednas.data.hash_id)",
    )
    _expect(
        sorted(c.order for c in first.cases) == sorted(c.order for c in other.cases),
        name,
        "Case.order changes with the salt: seeded splits would differ between run directories",
    )
    if read:
        _check_first_case_reads(first.cases[0], cfg, name)


def _check_cases(cases: Sequence[Any], task: Any, name: str) -> None:
    from mednas.data._cases import Case

    _expect(len(cases) > 0, name, "the dataset has no cases")
    _expect(all(isinstance(c, Case) for c in cases), name, "cases must be mednas.data.Case objects")
    keys = [c.key for c in cases]
    _expect(len(set(keys)) == len(keys), name, "case keys are not unique")
    _expect(keys == sorted(keys), name, "cases are not sorted by key")
    for case in cases:
        where = f"{name} case {case.key}"
        _expect(
            bool(_CASE_KEY.match(case.key)),
            where,
            "the case key must be a salted hash (mednas.data.hash_id(salt, image, 'c'))",
        )
        _expect(
            bool(_PATIENT_KEY.match(case.patient)),
            where,
            f"the patient must be a salted hash (mednas.data.hash_id(salt, patient, 'p')), got {case.patient!r}",
        )
        _expect(
            bool(case.order),
            where,
            "Case.order is empty: splits need a salt-free order key (mednas.data._cases.order_key)",
        )
        _expect(
            isinstance(case.images, tuple)
            and len(case.images) > 0
            and all(isinstance(i, str) for i in case.images),
            where,
            "images must be a non-empty tuple of paths",
        )
        if task.problem == "classification":
            _expect(
                isinstance(case.label, int) and 0 <= case.label < task.n_classes,
                where,
                f"label {case.label!r} is not a class index 0..{task.n_classes - 1}",
            )
        else:
            _expect(
                isinstance(case.label, str) and os.path.exists(case.label),
                where,
                f"label {case.label!r} is not an existing mask file",
            )


def _check_first_case_reads(case: Any, task: Any, name: str) -> None:
    from mednas.io import read_image

    for path in case.images + ((case.label,) if isinstance(case.label, str) else ()):
        try:
            read_image(path, series=task.data.series)
        except Exception as err:
            raise AssertionError(
                f"{name} case {case.key}: mednas.io.read_image cannot read {Path(path).name}: "
                f"{type(err).__name__}: {err}"
            ) from err


# --------------------------------------------------------------------------------------------------- losses


def check_loss(loss: Any, *, n_classes: int = 3, problems: Sequence[str] | None = None) -> None:
    """Check that a loss honours the mednas contract; raise ``AssertionError`` saying where not.

    For each problem the loss declares: :meth:`~mednas.train._losses.BaseLoss.build` gives a callable whose
    value on random logits is a finite scalar tensor, the same when computed twice, whose gradient reaches the
    logits (finite, not all zero), and which is lower for logits that favour the true class than for logits
    that favour a wrong one. A ``class_weighted`` loss must change when the class weights do.

    Args:
        loss: The class, an instance, or its registry name.
        n_classes: Classes of the test logits.
        problems: Problems to check (default: all the loss declares).

    Example:
        >>> check_loss("dice_ce")
    """
    from mednas.train._losses import LOSSES, BaseLoss

    cls = _registered_class(loss, LOSSES, BaseLoss, "register_loss")
    name = cls.name
    declared = tuple(cls.problems)
    _expect(
        bool(declared) and all(p in _PROBLEMS for p in declared),
        name,
        f"problems must be a non-empty tuple of {_PROBLEMS}, got {declared!r}",
    )
    for problem in problems or declared:
        _check_loss_for(cls(), problem, n_classes, f"{name} {problem}")


def _loss_batch(problem: str, n_classes: int) -> tuple[Any, Any, Any]:
    """``(target, logits favouring the target, logits favouring a wrong class)``."""
    import torch

    gen = torch.Generator().manual_seed(0)
    shape = (6,) if problem == "classification" else (2, 1, 9, 10)
    target = torch.randint(0, n_classes, shape, generator=gen)
    onehot = torch.nn.functional.one_hot(
        target.reshape(shape[0], *shape[2:]) if problem != "classification" else target, n_classes
    ).float()
    onehot = onehot if problem == "classification" else onehot.movedim(-1, 1)
    wrong = onehot.roll(1, dims=1)
    return target, 4.0 * onehot - 2.0, 4.0 * wrong - 2.0


def _scalar(value: Any) -> float:
    return float(value.detach())


def _check_loss_for(instance: Any, problem: str, n_classes: int, where: str) -> None:
    import torch

    target, good, bad = _loss_batch(problem, n_classes)
    fn = instance.build(problem, n_classes, None)
    _expect(callable(fn), where, f"build() returned {type(fn).__name__}, not a callable")
    noise = torch.randn(good.shape, generator=torch.Generator().manual_seed(1))
    logits = noise.clone().requires_grad_(True)
    value = fn(logits, target)
    _expect(isinstance(value, torch.Tensor) and value.numel() == 1, where, "the loss must be a scalar tensor")
    _expect(bool(torch.isfinite(value).all()), where, f"the loss is {value.item()} on random logits")
    _expect(
        _scalar(fn(noise, target)) == _scalar(value),
        where,
        "the loss differs between two calls on the same batch",
    )
    if value.requires_grad:
        value.backward()
    grad = logits.grad
    _expect(
        grad is not None and bool(torch.isfinite(grad).all()) and bool(grad.abs().sum() > 0),
        where,
        "no finite, non-zero gradient reaches the logits (is the loss detached from them?)",
    )
    low, high = _scalar(fn(good, target)), _scalar(fn(bad, target))
    _expect(
        low < high,
        where,
        f"logits favouring the true class give {low:g}, favouring a wrong class {high:g}: "
        "the loss must be lower for the better prediction",
    )
    if instance.class_weighted and problem == "classification":
        weights = torch.linspace(0.2, 3.0, n_classes)
        weighted = _scalar(instance.build(problem, n_classes, weights)(noise, target))
        _expect(
            not math.isclose(weighted, _scalar(value)),
            where,
            "class_weighted is True but the loss ignores class_weights",
        )
