"""The extension point for objective terms: a metric a task may name in ``objective.terms`` (or as a constraint).

A term is a :class:`BaseMetricTerm` subclass registered with :func:`register_metric` (built-ins and plugins
alike; plugins also list it in the ``mednas.metrics`` entry-point group). It computes one number from one
(re)sample of validation cases, :class:`MetricInputs`; its task-file keys are a pydantic model (``config``).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mednas._registry import PluginRegistry
from mednas.config._models import MetricTermConfig, PluginTermConfig

if TYPE_CHECKING:
    from mednas.metrics._operating_point import ThresholdRule
    from mednas.metrics._resampled import Resamples

__all__ = [
    "METRICS",
    "BaseMetricTerm",
    "MetricInputs",
    "MetricTermConfig",
    "list_metrics",
    "metric_term",
    "register_metric",
]


class MetricInputs:
    """One (re)sample of cases that a term is computed on.

    Args:
        problem: ``"classification"`` or ``"segmentation"``.
        truth: Classification: ``(N,)`` 1 where the case has a finding, else 0. Segmentation: ``(N, *S)`` true
            label maps.
        output: Classification: ``(N,)`` finding scores (probability of any finding). Segmentation:
            ``(N, *S)`` predicted label maps.
        threshold: Classification: the operating threshold (a case is called positive when its score is
            ``>= threshold``); ``nan`` where none is defined.
        fixed: The threshold was chosen on other data (validation, applied to test): rates are taken at it
            rather than re-optimised here.
        findings: Indices of the finding classes.
        case_stats: Segmentation: ``(N, 5)`` per-case ``[dice, lesions, detected, false-positive lesions,
            lesion-wise dice sum]`` rows (:func:`mednas.metrics._objective.segmentation_case_stats`).
        index: Rows of ``truth`` and ``output`` this sample holds (a bootstrap resample); None: all. The maps
            are indexed only when a term reads them, so built-in segmentation terms never copy them.
    """

    def __init__(
        self,
        problem: str,
        truth: Any,
        output: Any,
        *,
        threshold: float = math.nan,
        fixed: bool = False,
        findings: Sequence[int] = (),
        case_stats: np.ndarray | None = None,
        index: np.ndarray | None = None,
    ) -> None:
        self.problem = problem
        self._truth, self._output, self._index = truth, output, index
        self.threshold = float(threshold)
        self.fixed = fixed
        self.findings = tuple(int(f) for f in findings)
        self.case_stats = case_stats

    @property
    def truth(self) -> np.ndarray:
        """See the class docstring."""
        return _take(self._truth, self._index)

    @property
    def output(self) -> np.ndarray:
        """See the class docstring."""
        return _take(self._output, self._index)

    @property
    def both_classes(self) -> bool:
        """Classification: the sample holds cases with and without the finding."""
        truth = self.truth
        return bool(truth.any() and not truth.all())


def _take(values: Any, index: np.ndarray | None) -> np.ndarray:
    if index is None:
        return np.asarray(values)
    if isinstance(values, np.ndarray):
        return values[index]
    return np.asarray([values[i] for i in index])


class BaseMetricTerm(abc.ABC):
    """One objective term: a clinical metric of validation predictions, higher or lower is better.

    Subclasses set :attr:`problem`, :attr:`direction` and (for keys beyond ``metric`` and ``weight``)
    :attr:`config`, and implement :meth:`value`. Optional: :meth:`resampled` (all bootstrap resamples at once;
    without it the report calls :meth:`value` once per resample) and :meth:`operating_rule`.

    Example:
        >>> import numpy as np
        >>> term = metric_term("auroc")
        >>> term.value(term.config(metric="auroc"), MetricInputs("classification", np.array([0, 1]), np.array([0.2, 0.9])))
        1.0
    """

    #: Registry key, set by :func:`register_metric`.
    name: ClassVar[str] = ""
    #: ``"classification"`` or ``"segmentation"``.
    problem: ClassVar[str] = "classification"
    #: +1 when higher is better, -1 when lower is better (the objective adds ``weight * direction * value``).
    direction: ClassVar[int] = 1
    #: The term's task-file keys: a :class:`~mednas.config._models.MetricTermConfig` subclass whose ``metric``
    #: is the registry name (a ``Literal`` or a ``str``).
    config: ClassVar[type[MetricTermConfig]] = PluginTermConfig
    #: The term reads :attr:`MetricInputs.threshold` (an operating threshold is chosen after every epoch).
    needs_threshold: ClassVar[bool] = False

    @abc.abstractmethod
    def value(self, term: Any, inputs: MetricInputs) -> float:
        """Compute the metric on one sample of cases.

        Args:
            term: This term's validated task-file entry (an instance of :attr:`config`).
            inputs: Truth, predictions and operating threshold of the sample.

        Returns:
            The value; ``nan`` where the metric is undefined on this sample (e.g. one class only).
        """

    def resampled(self, term: Any, resamples: Resamples) -> np.ndarray | None:
        """Return the ``(B,)`` values on every bootstrap resample at once, or None (no vectorised form).

        Classification only. Must agree with :meth:`value` on each resample's cases
        (:func:`mednas.testing.check_metric_term` compares the two).
        """
        return None

    def operating_rule(self, term: Any) -> ThresholdRule | None:
        """The threshold rule this term implies when it comes first and the task names none (None: Youden)."""
        return None


METRICS: PluginRegistry[type[BaseMetricTerm]] = PluginRegistry(
    "metric term", "mednas.metrics", base=BaseMetricTerm, builtins="mednas.metrics._builtin_terms"
)

_instances: dict[type[BaseMetricTerm], BaseMetricTerm] = {}


def register_metric(name: str) -> Any:
    """Register a :class:`BaseMetricTerm` subclass under ``name`` (the value of ``metric:`` in a task file).

    Built-in terms use this decorator too; a plugin package also lists the class in its ``mednas.metrics``
    entry-point group so that a task naming the metric finds it.
    """
    return METRICS.register(name)


def metric_term(name: str) -> BaseMetricTerm:
    """The term registered as ``name`` (one shared instance per class).

    Raises:
        KeyError: With a did-you-mean for an unknown name.
        PluginError: For a plugin that cannot be loaded.
    """
    cls = METRICS.get(name)
    if cls not in _instances:
        _instances[cls] = cls()
    return _instances[cls]


def list_metrics(pattern: str = "*", *, problem: str | None = None) -> list[str]:
    """Names of the registered terms matching ``pattern`` (and ``problem``, when given)."""
    return [n for n in METRICS.names(pattern) if problem is None or METRICS.get(n).problem == problem]
