"""Typed, frozen models of a task file: what the data is, what a good model means, how to search.

Every model forbids unknown keys and suggests the closest known one, so a typo never silently falls back
to a default. The documentation in ``docs/task-reference.md`` is generated from these classes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    StrictBool,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from mednas._registry import did_you_mean
from mednas.config._plugins import Kind, registered, registry


class Strict(BaseModel):
    """Base for every config model: frozen, unknown keys rejected with a did-you-mean."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(cls.model_fields)
            for key in data:
                if key not in known:
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key '{key}'{hint}",
                        {"key": str(key), "hint": did_you_mean(str(key), sorted(known))},
                    )
        return data


# ------------------------------------------------------------------------------------------------ plugins
# Names that plugins may add (a layout, a loss, a metric term, a search space) are looked up through the
# registries mednas.api installs (mednas.config._plugins), so that config imports nothing above it.


def _literal_error(value: Any, choices: list[str]) -> PydanticCustomError:
    # The same error type as a Literal field's, so `load_task` words it the same way (with a did-you-mean).
    return PydanticCustomError(
        "literal_error", "Input should be {expected}", {"expected": ", ".join(repr(c) for c in choices)}
    )


def _registered_name(
    kind: Kind, builtin: tuple[str, ...], value: Any, handler: ValidatorFunctionWrapHandler
) -> Any:
    """Validate a registry key: a built-in through the field's ``Literal``, else a registered plugin's name."""
    if not isinstance(value, str) or value in builtin:
        return handler(value)
    if registered(kind, value) is not None:
        return value
    raise _literal_error(value, [*builtin, *(n for n in registry(kind).names() if n not in builtin)])


# --------------------------------------------------------------------------------------------------- data

#: Built-in dataset layouts (``data.format``); plugins add names through the ``mednas.layouts`` group.
BuiltinLayout = Literal["demo", "datalist", "decathlon", "csv", "folders", "medmnist"]


class SplitConfig(Strict):
    """How cases are divided into train, validation and test, always grouped by patient.

    ``policy: auto`` keeps the splits the source defines (MedMNIST's train/val/test arrays, a ``split`` column
    or field, MONAI datalist ``validation``/``testing`` sections, labelled Decathlon/nnU-Net test cases) and
    makes a seeded random split where it defines none; ``given`` requires splits from the source; ``random``
    pools every case and re-splits by patient (an explicit choice). ``data.split: given`` is shorthand for
    ``data.split: {policy: given}``. A source that gives train and test but no validation has validation
    carved out of its training patients (fraction ``val``); one that gives no test has no test split.
    """

    policy: Literal["auto", "given", "random"] = Field(
        "auto",
        description="`auto`: the source's own splits where it defines them, else random; `given`: the "
        "source's splits (an error where it defines none); `random`: pool all cases and re-split by patient.",
    )
    val: float = Field(
        0.2, gt=0, lt=1, description="Fraction of patients for validation (operating point, pruning)."
    )
    test: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Fraction of patients held out for the final test; never read during search.",
    )
    folds: int | None = Field(
        None, ge=2, description="k-fold cross-validation over train+val patients (None: one split)."
    )
    fold: int = Field(0, ge=0, description="Which fold is the validation fold when `folds` is set.")
    stratify: bool = Field(
        True, description="Stratify by label (classification) or by lesion presence (segmentation)."
    )

    @model_validator(mode="before")
    @classmethod
    def _policy_shorthand(cls, data: Any) -> Any:
        return {"policy": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.val + self.test >= 0.9:
            raise ValueError(
                f"val + test = {self.val + self.test:g} leaves too little for training (must be < 0.9)"
            )
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"fold {self.fold} does not exist with {self.folds} folds")
        return self


class DataConfig(Strict):
    """Where the images are and how to read them. Paths are relative to the task file; ``${VAR}`` expands."""

    format: BuiltinLayout = Field(
        description="Dataset layout: `demo` (built-in simulated data), `datalist` (MONAI datalist JSON), "
        "`decathlon` (dataset.json + imagesTr/labelsTr), `csv` (sheet of image, label, patient), "
        "`folders` (one folder per class), `medmnist` (.npz)."
    )
    path: str | None = Field(None, description="Datalist/CSV/npz file or dataset folder (not for `demo`).")
    demo: str | None = Field(
        None, description="Demo dataset name for `format: demo` (xray-nodule, mri-lesion)."
    )
    n_cases: int | None = Field(None, ge=4, description="Number of demo cases to simulate (`demo` only).")
    seed: int = Field(
        0,
        ge=0,
        description="Seed of simulated data (`demo`), independent of the search seed so searches compare on the same data.",
    )
    image_key: str = Field("image", description="Datalist/CSV field with the image path.")
    label_key: str = Field(
        "label", description="Datalist/CSV field with the label (class index, class name or mask path)."
    )
    patient_key: str = Field(
        "patient", description="Datalist/CSV field with the patient identifier (hashed on read)."
    )
    dicom_patient_id: bool = Field(
        True,
        description="When a case has no patient field and is DICOM, group by its PatientID (stored only hashed).",
    )
    blank_patient: Literal["error", "own"] = Field(
        "error",
        description="A blank patient cell in a datalist or CSV sheet that has a patient field: `error` refuses "
        "the dataset naming the rows; `own` makes each such case its own patient (DICOM PatientID where available), "
        "with a warning.",
    )
    series: str | None = Field(None, description="DICOM series to select in folders that hold several.")
    normalize: Literal["auto", "zscore", "percentile", "ct", "none"] = Field(
        "auto",
        description="Intensity normalisation: `auto` follows the fingerprint (CT: HU window; MR: z-score on the foreground; else percentiles).",
    )
    ct_window: tuple[float, float] | None = Field(
        None,
        description="HU window for `ct` normalisation; unset: the fingerprint's suggestion (0.5-99.5% of the labelled or body intensities), else -1000..1000.",
    )
    split: SplitConfig = Field(default_factory=SplitConfig)  # type: ignore[arg-type]
    split_key: str = Field(
        "split",
        description="Datalist/CSV field naming a case's given split (train, val or test; "
        "also training/validation/testing).",
    )
    allow_test_duplicates: bool = Field(
        False,
        description="Allow images whose pixel content also occurs in train to be in the test split (counted "
        "and reported either way); by default such exact duplicates are an error, as they inflate test figures.",
    )
    cache_dir: str | None = Field(
        None,
        description="Folder for derived data: proxy cache, demo data, augmented copies "
        "(default: $MEDNAS_CACHE_DIR, else RUN_DIR/cache; never the home directory unless named).",
    )
    label_threshold: float | None = Field(
        None,
        description="Segmentation masks are `label > label_threshold` (e.g. a skull-stripped image as a brain "
        "mask); unset: label files hold class indices. Binarised masks are materialised once into the cache.",
    )
    augment_copies: int = Field(
        0,
        ge=0,
        description="Add N augmented copies of every case (MONAI random affine, elastic, bias field, noise), "
        "made once into the cache, seeded by `data.seed`. For datasets with too few subjects: figures then "
        "measure robustness to augmentation, not generalisation to new patients.",
    )
    augment_group: Literal["patient", "copy"] = Field(
        "patient",
        description="How augmented copies are split: `patient` keeps every copy with its source patient; "
        "`copy` makes each copy its own split unit (single-subject data; splits then share the subject).",
    )
    augment_spacing: float | None = Field(
        None,
        gt=0,
        description="Resample axes finer than this (mm) before augmenting, so copies stay small; unset: keep.",
    )

    @field_validator("format", mode="wrap")
    @classmethod
    def _format_name(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # A plugin layout's name passes too; the annotation stays the built-in list that the reference shows.
        return _registered_name("layout", get_args(BuiltinLayout), value, handler)

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.format == "demo":
            if not self.demo:
                raise ValueError("`demo` must name a demo dataset when format is 'demo'")
        elif not self.path and (
            self.format in get_args(BuiltinLayout) or registered("layout", self.format).needs_path
        ):
            raise ValueError(f"`path` is required for format {self.format!r}")
        return self


class LabelsConfig(Strict):
    """Class names and which of them are clinical findings."""

    names: list[str] = Field(
        min_length=2, description="Class names in index order (segmentation: 0 is background)."
    )
    findings: list[str] = Field(
        default_factory=list, description="Classes that are clinical findings (default: all but the first)."
    )

    @model_validator(mode="after")
    def _check(self) -> LabelsConfig:
        if len(set(self.names)) != len(self.names):
            raise ValueError("class names must be unique")
        for f in self.findings:
            if f not in self.names:
                raise ValueError(f"finding {f!r} is not a class name{did_you_mean(f, self.names)}")
        if not self.findings:
            object.__setattr__(self, "findings", list(self.names[1:]))
        return self

    @property
    def finding_indices(self) -> list[int]:
        """Indices of the finding classes."""
        return [self.names.index(f) for f in self.findings]


# ---------------------------------------------------------------------------------------------- objective

#: Direction of every metric mednas computes: +1 higher is better, -1 lower is better.
METRIC_DIRECTIONS: dict[str, int] = {
    # classification (finding vs no finding)
    "sensitivity_at_specificity": 1,
    "specificity_at_sensitivity": 1,
    "auroc": 1,
    "auprc": 1,
    "sensitivity": 1,
    "specificity": 1,
    "ppv": 1,
    "npv": 1,
    "fbeta": 1,
    "weighted_balanced_accuracy": 1,
    "expected_cost": -1,
    "net_benefit": 1,
    "brier": -1,
    "ece": -1,
    # segmentation
    "dice": 1,
    "lesion_sensitivity": 1,
    "lesion_dice": 1,
    "false_positive_lesions_per_case": -1,
    # static and measured cost
    "params": -1,
    "macs": -1,
    "activation_mb": -1,
    "latency_ms": -1,
}
#: Losses by problem (see mednas.train.make_loss); `auto` resolves to the first of each list.
LOSS_CHOICES: dict[str, list[str]] = {
    "classification": ["weighted_ce", "ce", "focal"],
    "segmentation": ["dice_ce", "dice", "dice_focal", "focal", "tversky"],
}
#: Built-in losses (``training.loss``); plugins add names through the ``mednas.losses`` group.
BuiltinLoss = Literal["auto", "ce", "weighted_ce", "focal", "dice", "dice_ce", "dice_focal", "tversky"]
_BUILTIN_LOSSES: tuple[str, ...] = get_args(BuiltinLoss)


def _plugin_loss_for(name: str, problem: str) -> bool:
    """Whether ``name`` is a plugin loss for ``problem`` (built-ins are checked against LOSS_CHOICES)."""
    if name in _BUILTIN_LOSSES:
        return False
    loss = registered("loss", name)
    return loss is not None and problem in loss.problems


def _plugin_losses(problem: str) -> list[str]:
    return [n for n in registry("loss").names() if n not in _BUILTIN_LOSSES and _plugin_loss_for(n, problem)]


CLASSIFICATION_METRICS = frozenset(list(METRIC_DIRECTIONS)[:14])
SEGMENTATION_METRICS = frozenset(
    ["dice", "lesion_sensitivity", "lesion_dice", "false_positive_lesions_per_case"]
)
COST_METRICS = frozenset(["params", "macs", "activation_mb", "latency_ms"])
STATIC_COST_METRICS = frozenset(["params", "macs", "activation_mb"])


def metric_direction(name: str) -> int:
    """+1 when higher is better, -1 when lower: a built-in metric or a registered metric term (plugin).

    Raises:
        KeyError: For a name that is neither.
    """
    if name in METRIC_DIRECTIONS:
        return METRIC_DIRECTIONS[name]
    term = registered("metric", name)
    if term is None:
        raise KeyError(f"unknown metric {name!r}")
    return int(term.direction)


def _check_metric_name(name: str) -> None:
    """Raise ValueError (with a did-you-mean over built-ins and plugins) unless ``name`` is a known metric."""
    if name in METRIC_DIRECTIONS or registered("metric", name) is not None:
        return
    known = [*METRIC_DIRECTIONS, *(n for n in registry("metric").names() if n not in METRIC_DIRECTIONS)]
    raise ValueError(f"unknown metric {name!r}{did_you_mean(name, known)}")


def _metric_problem(name: str) -> str | None:
    """The problem a term needs (None: any, as the cost metrics)."""
    if name in CLASSIFICATION_METRICS:
        return "classification"
    if name in SEGMENTATION_METRICS:
        return "segmentation"
    if name in METRIC_DIRECTIONS:
        return None
    term = registered("metric", name)
    return None if term is None else str(term.problem)


class MetricTermConfig(Strict):
    """Keys every objective term has: ``metric`` (a registry name) and ``weight``; a term adds its own.

    A metric-term plugin (:class:`mednas.metrics.BaseMetricTerm`) whose term takes parameters declares a
    subclass with ``metric: Literal["<name>"]`` and its parameters as fields.
    """

    weight: float = Field(1.0, gt=0, description="Weight of this term in a weighted sum.")


class PluginTermConfig(MetricTermConfig):
    """The keys of a plugin term that takes no parameters: ``metric`` and ``weight``."""

    metric: str


class SensitivityAtSpecificity(MetricTermConfig):
    """Highest sensitivity for the findings whose specificity on validation is at least the floor."""

    metric: Literal["sensitivity_at_specificity"]
    min_specificity: float = Field(0.9, gt=0, lt=1)


class SpecificityAtSensitivity(MetricTermConfig):
    """Highest specificity whose sensitivity on validation is at least the floor."""

    metric: Literal["specificity_at_sensitivity"]
    min_sensitivity: float = Field(0.9, gt=0, lt=1)


class AUROC(MetricTermConfig):
    """Area under the ROC curve of the finding score."""

    metric: Literal["auroc"]


class AUPRC(MetricTermConfig):
    """Area under the precision-recall curve (average precision) of the finding score; suits rare findings."""

    metric: Literal["auprc"]


class FBeta(MetricTermConfig):
    """F-beta of the finding at the operating threshold (beta > 1 weighs sensitivity more)."""

    metric: Literal["fbeta"]
    beta: float = Field(2.0, gt=0)


class WeightedBalancedAccuracy(MetricTermConfig):
    """``w * sensitivity + (1 - w) * specificity`` at the operating threshold (sensitivity-weighted accuracy)."""

    metric: Literal["weighted_balanced_accuracy"]
    sensitivity_weight: float = Field(0.7, gt=0, lt=1)


class ExpectedCost(MetricTermConfig):
    """Mean cost per case at the operating threshold, from a declared 2x2 cost matrix (lower is better).

    ``cost_matrix[true][predicted]`` with 0 = no finding, 1 = finding, e.g. ``[[0, 1], [10, 0]]``: a missed
    finding costs ten false alarms. Enters a weighted sum with a negative sign.
    """

    metric: Literal["expected_cost"]
    cost_matrix: list[list[float]] = Field(description="2x2 costs, rows true class, columns predicted.")

    @model_validator(mode="after")
    def _check(self) -> ExpectedCost:
        if len(self.cost_matrix) != 2 or any(len(r) != 2 for r in self.cost_matrix):
            raise ValueError("cost_matrix must be 2x2: [[TN cost, FP cost], [FN cost, TP cost]]")
        return self


class NetBenefit(MetricTermConfig):
    """Net benefit of acting on the model at a threshold probability (decision-curve analysis)."""

    metric: Literal["net_benefit"]
    threshold_probability: float = Field(0.1, gt=0, lt=1)


class Brier(MetricTermConfig):
    """Brier score of the finding probability (calibration and sharpness; lower is better)."""

    metric: Literal["brier"]


class ECE(MetricTermConfig):
    """Expected calibration error of the finding probability (equal-width bins; lower is better)."""

    metric: Literal["ece"]
    n_bins: int = Field(10, ge=2)


class Dice(MetricTermConfig):
    """Mean Dice over cases of the finding classes (empty prediction on empty truth counts 1)."""

    metric: Literal["dice"]


class LesionSensitivity(MetricTermConfig):
    """Fraction of ground-truth lesions (connected components) the prediction detects, pooled over cases.

    ``overlap`` says when a lesion counts as detected: ``any`` (one predicted voxel touches it),
    ``iou>=x`` (IoU of the lesion with the predicted components touching it) or ``fraction>=x`` (share of the
    lesion's voxels predicted). ``any`` is the classic rule but a model that paints the whole image detects
    everything; ``iou>=0.1`` still counts a rough hit and refuses such a blob.
    """

    metric: Literal["lesion_sensitivity"]
    overlap: str = Field(
        "any",
        pattern=r"^(any|(iou|fraction)>=(0?\.\d+|1(\.0+)?))$",
        description="Detection rule: any, iou>=x or fraction>=x.",
    )


class LesionDice(MetricTermConfig):
    """Lesion-wise Dice in the BraTS 2023 manner: a missed lesion and a false-positive lesion each count 0."""

    metric: Literal["lesion_dice"]


class FalsePositiveLesions(MetricTermConfig):
    """Predicted lesions touching no ground-truth lesion, per case (lower is better)."""

    metric: Literal["false_positive_lesions_per_case"]


Term = Annotated[
    SensitivityAtSpecificity
    | SpecificityAtSensitivity
    | AUROC
    | AUPRC
    | FBeta
    | WeightedBalancedAccuracy
    | ExpectedCost
    | NetBenefit
    | Brier
    | ECE
    | Dice
    | LesionSensitivity
    | LesionDice
    | FalsePositiveLesions,
    Field(discriminator="metric"),
]


class OperatingPointConfig(Strict):
    """How the decision threshold is chosen on validation (classification); carried to retraining and export.

    Unset ``rule``: follows the first objective term (sensitivity at its specificity floor, specificity at
    its sensitivity floor, minimum cost for ``expected_cost``), else Youden's index.
    """

    rule: (
        Literal["sensitivity_at_specificity", "specificity_at_sensitivity", "youden", "fbeta", "min_cost"]
        | None
    ) = Field(None, description="Threshold rule.")
    target: float | None = Field(None, gt=0, lt=1, description="Floor for the two constrained rules.")
    beta: float = Field(1.0, gt=0, description="Beta of the `fbeta` rule.")
    cost_matrix: list[list[float]] | None = Field(None, description="2x2 costs of the `min_cost` rule.")

    @model_validator(mode="after")
    def _check(self) -> OperatingPointConfig:
        if self.rule in ("sensitivity_at_specificity", "specificity_at_sensitivity") and self.target is None:
            raise ValueError(f"rule {self.rule!r} needs a `target`")
        if self.rule == "min_cost" and self.cost_matrix is None:
            raise ValueError("rule 'min_cost' needs a `cost_matrix`")
        return self


class ConstraintConfig(Strict):
    """A limit a candidate must meet: a validation metric, or a static/measured cost.

    Static costs (``params``, ``macs``, ``activation_mb``) and ``latency_ms`` are checked before any training and
    reject a candidate in milliseconds; metric constraints are evaluated on validation and passed to Optuna's
    constraints support (infeasible trials are never reported as best).
    """

    metric: str = Field(
        description="A metric name (see the list in the reference) or params, macs, activation_mb, latency_ms."
    )
    min: float | None = Field(None, description="The metric must be at least this.")
    max: float | None = Field(None, description="The metric must be at most this.")

    @model_validator(mode="after")
    def _check(self) -> ConstraintConfig:
        _check_metric_name(self.metric)
        if (self.min is None) == (self.max is None):
            raise ValueError(f"constraint on {self.metric!r} needs exactly one of `min` or `max`")
        return self

    def violation(self, value: float) -> float:
        """Optuna's convention: <= 0 when satisfied, the amount of violation otherwise."""
        return (self.min - value) if self.min is not None else (value - self.max)  # type: ignore[operator]

    def __str__(self) -> str:
        return f"{self.metric} >= {self.min:g}" if self.min is not None else f"{self.metric} <= {self.max:g}"


class SecondaryObjective(Strict):
    """A further objective: the study becomes multi-objective (Pareto front in ``summary.json``)."""

    metric: str = Field(description="A metric name or params, macs, activation_mb, latency_ms.")
    direction: Literal["minimize", "maximize"] | None = Field(
        None, description="Default: the metric's natural direction."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"metric": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _check(self) -> SecondaryObjective:
        _check_metric_name(self.metric)
        if self.direction is None:
            object.__setattr__(
                self, "direction", "maximize" if metric_direction(self.metric) > 0 else "minimize"
            )
        return self


class LatencyConfig(Strict):
    """How ``latency_ms`` is measured: the candidate on the runtime that will serve it, before any training.

    The candidate (untrained: the time does not depend on the weights) is exported to ``runtime`` and timed at the
    full input shape: ``warmup`` untimed passes, then ``repeats`` timed ones; ``latency_ms`` is their median (the
    trial record keeps the 90th percentile too). A figure is measured once per candidate and setting and kept in
    the run directory (``cache/latency.json``). ``target: NAME`` sets these keys from a deployment target
    (``mednas/configs/targets/``); keys set here win over the target's. See ``docs/objectives.md``.
    """

    runtime: Literal["onnxruntime", "torchscript", "torch"] = Field(
        "onnxruntime",
        description='`onnxruntime` (CPU; needs `pip install "mednas[export]"`), `torchscript` (traced) or '
        "`torch` (eager). Runs made before this key existed measured in eager torch and keep doing so.",
    )
    precision: Literal["fp32", "int8"] = Field(
        "fp32",
        description="`fp32`, or `int8` (ONNX Runtime only: the candidate is statically quantized first).",
    )
    threads: int = Field(1, ge=1, description="CPU threads the figure is taken on (intra-op).")
    batch: int = Field(1, ge=1, description="Images per timed forward pass.")
    warmup: int = Field(3, ge=0, description="Untimed forward passes before the timed ones.")
    repeats: int = Field(20, ge=1, description="Timed forward passes (the median is `latency_ms`).")
    device: str | None = Field(
        None,
        pattern=r"^(cpu|cuda(:\d+)?)$",
        description="`cpu` or `cuda[:n]`; unset: the trial's device for `torch`/`torchscript`, the CPU for "
        "`onnxruntime`.",
    )
    input_shape: list[int] | None = Field(
        None, description="Spatial input shape; default: the full training shape."
    )

    @field_validator("precision")
    @classmethod
    def _int8_needs_onnxruntime(cls, value: str, info: ValidationInfo) -> str:
        runtime = info.data.get("runtime")
        if value == "int8" and runtime is not None and runtime != "onnxruntime":
            raise ValueError(f"int8 is timed on ONNX Runtime only (runtime: onnxruntime), not on {runtime}")
        return value

    @field_validator("device")
    @classmethod
    def _onnxruntime_on_cpu(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and value != "cpu" and info.data.get("runtime") == "onnxruntime":
            raise ValueError(
                f"runtime onnxruntime runs on the CPU (got {value}); for a GPU figure use runtime: torch or torchscript"
            )
        return value

    def measured_on(self, trial_device: str) -> str:
        """The device the figure is taken on: ``device``, else the CPU for ONNX Runtime, else the trial's."""
        if self.device is not None:
            return self.device
        return "cpu" if self.runtime == "onnxruntime" else trial_device


class BootstrapConfig(Strict):
    """Percentile bootstrap over patients for every reported interval."""

    resamples: int = Field(500, ge=50, description="Bootstrap resamples.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Interval coverage.")


class ObjectiveConfig(Strict):
    """What a clinically good model means, computed on the validation patients.

    ``terms`` with one entry is a single metric; several entries form ``sum(weight * sign * value) / sum(weight)``
    where ``sign`` is -1 for metrics where lower is better. ``constraints`` exclude candidates; ``secondary``
    objectives make the study multi-objective.
    """

    terms: list[SerializeAsAny[Term]] = Field(
        min_length=1, description="Metric terms (see the metric list below)."
    )
    operating_point: OperatingPointConfig = Field(default_factory=OperatingPointConfig)  # type: ignore[arg-type]
    constraints: list[ConstraintConfig] = Field(
        default_factory=list, description="Limits a candidate must meet."
    )
    secondary: list[SecondaryObjective] = Field(
        default_factory=list, description="Further objectives (multi-objective study)."
    )
    latency: LatencyConfig = Field(default_factory=LatencyConfig)  # type: ignore[arg-type]
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)  # type: ignore[arg-type]

    @model_validator(mode="before")
    @classmethod
    def _single_metric_shorthand(cls, data: Any) -> Any:
        # `objective: {metric: auroc, ...}` is shorthand for `objective: {terms: [{metric: auroc, ...}]}`; a
        # shorthand metric (the task's own) replaces terms merged in from a preset underneath it.
        if isinstance(data, dict) and "metric" in data:
            outer = {
                k: data[k]
                for k in ("operating_point", "constraints", "secondary", "latency", "bootstrap")
                if k in data
            }
            term = {k: v for k, v in data.items() if k not in outer and k != "terms"}
            return {"terms": [term], **outer}
        return data

    @field_validator("terms", mode="wrap")
    @classmethod
    def _plugin_terms(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # Built-in terms validate through the discriminated union `Term` (whose models the reference documents);
        # a term registered by a plugin validates through its own model (`BaseMetricTerm.config`).
        if not isinstance(value, list):
            return handler(value)
        builtin = get_args(get_args(Term)[0])
        tags = {get_args(m.model_fields["metric"].annotation)[0] for m in builtin}
        plugins = {
            i: item
            for i, item in enumerate(value)
            if isinstance(item, dict) and isinstance(item.get("metric"), str) and item["metric"] not in tags
        }
        if not plugins:
            return handler(value)
        out = handler([{"metric": "auroc"} if i in plugins else item for i, item in enumerate(value)])
        errors: list[InitErrorDetails] = []
        for i, item in plugins.items():
            name = item["metric"]
            term = registered("metric", name)
            if term is None:
                known = sorted(tags | set(registry("metric").names()))
                errors.append(
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "union_tag_invalid",
                            "unknown metric {tag}",
                            {
                                "tag": name,
                                "expected_tags": ", ".join(repr(k) for k in known),
                                "discriminator": "'metric'",
                            },
                        ),
                        loc=(i,),
                        input=item,
                    )
                )
                continue
            try:
                out[i] = term.config.model_validate(item)
            except ValidationError as exc:
                errors += [
                    InitErrorDetails(
                        type=PydanticCustomError(e["type"], e["msg"], e.get("ctx")),
                        loc=(i, name, *e["loc"]),
                        input=e["input"],
                    )
                    for e in exc.errors()
                ]
        if errors:
            raise ValidationError.from_exception_data("terms", errors)
        return out

    @property
    def name(self) -> str:
        """A readable name, e.g. ``sensitivity_at_specificity`` or ``0.5*dice+0.5*lesion_sensitivity``."""
        if len(self.terms) == 1:
            return self.terms[0].metric
        total = sum(t.weight for t in self.terms)
        return "+".join(
            f"{'-' if metric_direction(t.metric) < 0 else ''}{t.weight / total:.2g}*{t.metric}"
            for t in self.terms
        ).replace("+-", "-")

    @property
    def names(self) -> list[str]:
        """Objective names in study order: the primary, then the secondary metrics."""
        return [self.name] + [s.metric for s in self.secondary]

    @property
    def directions(self) -> list[str]:
        """Study directions: the primary is maximised, secondary ones as declared."""
        return ["maximize"] + [str(s.direction) for s in self.secondary]

    @property
    def multi_objective(self) -> bool:
        """True when there are secondary objectives."""
        return bool(self.secondary)

    @property
    def measures_latency(self) -> bool:
        """True when a constraint or a secondary objective names ``latency_ms`` (the search then times candidates)."""
        return any(c.metric == "latency_ms" for c in self.constraints) or any(
            s.metric == "latency_ms" for s in self.secondary
        )


# ------------------------------------------------------------------------------------------------- search


class BudgetConfig(Strict):
    """Static limits checked before any training; a candidate over budget is rejected in milliseconds."""

    max_params: int | None = Field(None, gt=0, description="Most trainable parameters.")
    max_macs: float | None = Field(
        None, gt=0, description="Most multiply-accumulates for one full-size input."
    )
    max_activation_mb: float | None = Field(
        None, gt=0, description="Most forward activation memory (MB) for one training batch at full size."
    )


class PrunerConfig(Strict):
    """Early stopping of hopeless trials on their per-epoch validation objective."""

    name: Literal["median", "hyperband", "none"] = Field("median", description="Optuna pruner.")
    startup_trials: int = Field(4, ge=0, description="Trials that are never pruned (median pruner).")
    warmup_epochs: int = Field(1, ge=0, description="Epochs before a trial may be pruned.")

    @model_validator(mode="before")
    @classmethod
    def _name_shorthand(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class ReevaluateConfig(Strict):
    """Re-train the best few proxy candidates with extra seeds and rank them by the seed mean.

    After the study's trials are done, the ``top`` best complete trials that meet every constraint and started
    learning (ranked by their single-seed value) are proxy-trained again with ``seeds`` further seeds each
    (same architecture, loss and sampling). Their trials then rank by the mean over all seeds (user attribute
    ``proxy_mean``), in ``summary.json`` and when ``mednas retrain`` picks its top-k; the extra time is
    reported as ``summary.json`` ``reevaluation.cost_fraction``. Multi-objective studies re-evaluate the
    primary objective only (the Pareto front stays as measured; its order uses the mean).
    """

    top: int = Field(0, ge=0, description="How many of the best proxy candidates to re-evaluate (0: off).")
    seeds: int = Field(
        2, ge=1, description="Extra proxy seeds per re-evaluated candidate (its own seed comes first)."
    )


class RungConfig(Strict):
    """One rung of the resolution ladder: a fraction of the full shape and the epochs trained there."""

    scale: float = Field(
        gt=0,
        le=1,
        description="Rung shape as a fraction of the full shape (per axis, rounded to a multiple of 8, at least 16).",
    )
    epochs: int = Field(ge=1, description="Epochs trained at this rung.")


class LadderConfig(Strict):
    """The resolution ladder (``search.fidelity: ladder``): candidates climb from low to full resolution.

    A trial trains each rung in turn, carrying its weights up where the network runs unchanged at the new size;
    at each rung's end it is compared with every trial that reached that rung and only the best ``1/eta`` go on.
    See ``docs/ladder.md``.
    """

    rungs: list[RungConfig] | None = Field(
        None,
        description="Rungs from lowest to full resolution (the last has scale 1.0); unset: scales "
        "[0.25, 0.5, 1.0] (or [0.5, 1.0] where a quarter of the full shape is under 16 on an axis), every "
        "rung `proxy.epochs // 2` epochs (at least 1): the climb's epochs are split evenly over the shapes, "
        "as in progressive resizing.",
    )
    eta: int = Field(3, ge=2, description="Reduction factor: about one in `eta` trials climbs each rung.")
    brackets: Literal["successive_halving", "hyperband"] = Field(
        "successive_halving",
        description="Single objective: successive halving (see `promotion`) or Optuna's `HyperbandPruner` "
        "at the rungs (several objectives: mednas's Pareto-aware rule, either way).",
    )
    promotion: Literal["deferred", "immediate"] = Field(
        "deferred",
        description="Successive halving on one objective: `deferred` (every trial pauses at a rung's end, its "
        "weights kept; once every candidate has completed the rung, its best max(1, n // eta) climb on, each "
        "in a continuation trial) or `immediate` (Optuna's `SuccessiveHalvingPruner`: decided at once against "
        "the trials before it, so early trials climb easily). Hyperband and several objectives always decide "
        "at once.",
    )

    @field_validator("rungs")
    @classmethod
    def _check_rungs(cls, value: list[RungConfig] | None) -> list[RungConfig] | None:
        if value is None:
            return value
        if not value:
            raise ValueError(
                "the ladder needs at least one rung (the last with scale 1.0), or null for the default"
            )
        scales = [r.scale for r in value]
        if scales[-1] != 1.0:
            raise ValueError(f"the last rung must have scale 1.0 (full resolution), got {scales[-1]:g}")
        if any(b <= a for a, b in zip(scales, scales[1:])):
            raise ValueError(f"rung scales must increase from rung to rung, got {scales}")
        return value


#: Longest list a search-space option may hold (choices such as kernel sizes or block types).
MAX_OPTION_ITEMS = 64


def _space_option_names(family: str) -> set[str] | None:
    """Option names the registered family ``family`` accepts, or ``None`` when it is not registered.

    The registry holds classes and their ``default_options`` (plain data); loading it imports neither torch
    nor MONAI, so checking options here keeps a typo from surfacing only when the search starts.
    """
    spaces = registry("space")
    if family not in spaces.names():
        return None
    return set(spaces.find(family).default_options)


def _option_value_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a search-space option (a bound, a choice or a short list of them), or ``None``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return None
    if isinstance(value, list):
        if len(value) > MAX_OPTION_ITEMS:
            return f"a list of {len(value)} items; options hold at most {MAX_OPTION_ITEMS}"
        for item in value:
            if isinstance(item, list):
                if len(item) > MAX_OPTION_ITEMS or not all(
                    x is None or isinstance(x, (bool, int, float, str)) for x in item
                ):
                    return "lists inside an option may hold only numbers or strings"
            elif not (item is None or isinstance(item, (bool, int, float, str))):
                return f"list items must be numbers, strings or short lists, got {type(item).__name__}"
        return None
    return f"expected a number, a string or a list, got {type(value).__name__}"


class SearchConfig(Strict):
    """The Optuna study: which families, which sampler and pruner, how many trials."""

    spaces: list[str] = Field(
        min_length=1, description="Search-space families (registry keys, see `mednas spaces`)."
    )
    space_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-family bounds, e.g. `{resnet: {max_width: 32}}`."
    )
    sampler: Literal["tpe", "nsga2", "random"] = Field(
        "tpe",
        description="Optuna sampler (seeded): `tpe` (multi-objective TPE when there are secondary objectives), `nsga2`, `random`.",
    )
    population_size: int = Field(12, ge=2, description="NSGA-II population size.")
    losses: list[str] | None = Field(
        None,
        description="Losses to search over (imbalance handling), e.g. [weighted_ce, focal]; unset: training.loss.",
    )
    sampling: list[Literal["uniform", "balanced"]] | None = Field(
        None,
        description="Batch sampling to search over; unset: training.sampling. Classification: a trial with a "
        "class-weighted loss trains with uniform batches (one imbalance remedy at a time) unless "
        "training.stack_imbalance_remedies is true.",
    )
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)  # type: ignore[arg-type]
    n_trials: int = Field(20, ge=1, description="Finished trials (complete + pruned) the study should reach.")
    timeout: float | None = Field(None, gt=0, description="Stop starting new trials after this many seconds.")
    seed: int = Field(0, ge=0, description="Task seed: splits, sampler and per-trial seeds derive from it.")
    budget: BudgetConfig = Field(default_factory=BudgetConfig)  # type: ignore[arg-type]
    max_failures: int = Field(10, ge=1, description="Stop the search after this many failed trials in a row.")
    keep_weights: int = Field(
        5,
        ge=0,
        description="Keep the proxy weights (`trials/<n>/model.pt`) of this many best trials; others are deleted.",
    )
    dead_check_epoch: int | None = Field(
        None,
        ge=0,
        description="Proxy epoch at which a candidate that has not started learning (training loss down "
        "by < 3% since epoch 1 and validation predictions constant, empty or never better than epoch 1) is pruned "
        "and flagged; unset: max(2, proxy.epochs // 4) when that is before the last epoch, else off; 0: off (the "
        "end-of-training flag still applies).",
    )
    reevaluate: ReevaluateConfig = Field(default_factory=ReevaluateConfig)  # type: ignore[arg-type]
    fidelity: Literal["flat", "ladder"] = Field(
        "flat",
        description="`flat`: every candidate trains once at the proxy (`proxy`); `ladder`: candidates climb the "
        "resolution ladder (`search.ladder`) carrying their weights, and the best leave it trained at full "
        "resolution (see docs/ladder.md).",
    )
    ladder: LadderConfig = Field(
        default_factory=LadderConfig,  # type: ignore[arg-type]
        description="The resolution ladder's rungs, `eta` and brackets (used when `fidelity: ladder`).",
    )
    inherit: StrictBool = Field(
        False,
        description="Weight inheritance: a new candidate starts from the weights of the most similar finished "
        "candidate of its family in this run (whole tensors where shapes match, overlapping slices where widths "
        "differ, fresh elsewhere), on the ladder's first rung or the flat proxy; the record names its `parent` "
        "and `inherited_fraction`. Keeps every finished candidate's weights (`trials/<n>/parent.pt`): see "
        "docs/ladder.md for the disk it costs. Whether it helps is measured (benchmarks/ladder.py), not assumed.",
    )

    @model_validator(mode="after")
    def _check_inherit(self) -> SearchConfig:
        if self.inherit and self.reevaluate.top:
            raise ValueError(
                "inherit: true with reevaluate.top: re-evaluation retrains a candidate from scratch with other "
                "seeds, which would not repeat an inherited trial's training; turn one of them off"
            )
        return self

    @field_validator("space_options")
    @classmethod
    def _check_space_options(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for family, options in value.items():
            known = _space_option_names(family)
            if known is None:
                names = registry("space").names()
                raise ValueError(
                    f"{family}: unknown search space{did_you_mean(family, names)}; known: {', '.join(names)}"
                )
            for name, option in options.items():
                if name not in known:
                    raise ValueError(
                        f"{family}.{name}: unknown option for search space {family!r}"
                        f"{did_you_mean(str(name), sorted(known))}; known: {', '.join(sorted(known)) or 'none'}"
                    )
                problem = _option_value_problem(option)
                if problem:
                    raise ValueError(f"{family}.{name}: {problem}")
        return value


class ProxyConfig(Strict):
    """The cheap stand-in for full training used to rank candidates."""

    shape: list[int] | None = Field(
        None, description="Spatial shape of proxy inputs; default: `scale` times the full shape."
    )
    scale: float = Field(
        0.5, gt=0, le=1, description="Proxy shape as a fraction of the full shape (when `shape` is unset)."
    )
    epochs: int = Field(5, ge=1, description="Training epochs per proxy trial.")
    subset: float = Field(1.0, gt=0, le=1, description="Fraction of training cases used by the proxy.")


class TrainingConfig(Strict):
    """The one training loop's settings (proxy trials and full retraining)."""

    shape: list[int] | None = Field(
        None, description="Full-resolution spatial input shape; default: the fingerprint's median shape."
    )
    batch_size: int = Field(16, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0, description="Learning rate.")
    weight_decay: float = Field(1e-4, ge=0)
    loss: BuiltinLoss = Field(
        "auto",
        description="Loss; `auto` is class-weighted CE for classification and Dice+CE for segmentation.",
    )
    epochs: int = Field(30, ge=1, description="Full-fidelity epochs (retraining).")
    patience: int = Field(
        8, ge=1, description="Early stopping patience in epochs on the validation objective (retraining)."
    )
    patch: list[int] | None = Field(
        None,
        description="Segmentation retraining on volumes too large to train whole: random patches of this size "
        "(a third centred on foreground), validation and test by sliding-window inference; unset: whole volumes.",
    )
    augment: bool = Field(True, description="Random flips during training.")
    sampling: Literal["uniform", "balanced"] = Field(
        "uniform",
        description="`balanced`: classes (classification) or cases with findings (segmentation) drawn equally often.",
    )
    stack_imbalance_remedies: bool = Field(
        False,
        description="Allow a class-weighted loss (`weighted_ce`, `focal`) together with `balanced` sampling "
        "(classification). Off: the two are not combined, in training settings or in the search (which then "
        "chooses a weighted loss, balanced sampling or neither), because together they correct the class prior "
        "twice and push the operating threshold to an extreme.",
    )
    amp: bool = Field(True, description="Automatic mixed precision on CUDA (ignored on CPU).")
    grad_clip: float | None = Field(5.0, gt=0, description="Gradient norm clipping.")
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for torch, OpenMP and MKL in each process (`--threads` wins); unset: the "
        "CPUs this process may use (affinity mask, cgroup quota) divided by the local workers, fewer when other work "
        "keeps the machine busy at start. Not part of the run's identity.",
    )

    @field_validator("loss", mode="wrap")
    @classmethod
    def _loss_name(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # A plugin loss's name passes too; the annotation stays the built-in list that the reference shows.
        return _registered_name("loss", _BUILTIN_LOSSES, value, handler)


class PrivacyConfig(Strict):
    """What may appear in outputs besides salted case hashes."""

    show_file_names: bool = Field(
        False, description="Allow source file names in reports and logs (they can hold patient names)."
    )


class TrackingConfig(Strict):
    """Experiment tracking: where each trial, retrained candidate and exported bundle is logged as an MLflow run.

    Not part of the run's identity: tracking changes nothing that is searched, so it may be turned on, off or
    pointed elsewhere between the sessions of one study.
    """

    mlflow: str | None = Field(
        None,
        min_length=1,
        description="MLflow tracking URI: `file:./mlruns`, `sqlite:///mlflow.db`, `http(s)://host:5000` (needs "
        '`pip install "mednas[tracking]"`; `--mlflow` wins). A local path is recorded absolute; credentials in '
        "it are used, never written or shown. An unreachable store is a warning, never a stop.",
    )
    experiment: str | None = Field(
        None, min_length=1, description="MLflow experiment the runs go to (default: the study name)."
    )


class TaskConfig(Strict):
    """A clinical task: data, labels, objective, search, proxy and training settings."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Task name (run and study names derive from it)."
    )
    description: str = ""
    problem: Literal["classification", "segmentation"]
    spatial_dims: Literal[2, 3]
    in_channels: int = Field(1, ge=1)
    data: DataConfig
    labels: LabelsConfig
    objective: ObjectiveConfig
    search: SearchConfig
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)  # type: ignore[arg-type]
    training: TrainingConfig = Field(default_factory=TrainingConfig)  # type: ignore[arg-type]
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)  # type: ignore[arg-type]
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)  # type: ignore[arg-type]
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="`auto` picks CUDA when present."
    )
    target: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        description="Deployment target: a file `configs/targets/NAME.yaml` (a project's own, else the shipped "
        "`cpu-1thread`, `cpu-1thread-int8`, `cpu-4thread`, `gpu`) that sets how `latency_ms` is measured "
        "(`objective.latency`: runtime, precision, threads, batch, device); keys the task sets under "
        "`objective.latency` win. Not part of the run's identity (the settings it gives are).",
    )

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        for key in ("shape",):
            for section in (self.proxy, self.training):
                shape = getattr(section, key)
                if shape is not None and len(shape) != self.spatial_dims:
                    raise ValueError(
                        f"{type(section).__name__.removesuffix('Config').lower()}.{key} {shape} must have {self.spatial_dims} entries"
                    )
        named = [t.metric for t in self.objective.terms] + [c.metric for c in self.objective.constraints]
        named += [s.metric for s in self.objective.secondary]
        for metric in named:
            needs = _metric_problem(metric)
            if needs is not None and needs != self.problem:
                raise ValueError(f"objective metric {metric!r} needs a {needs} task")
        check = self.search.dead_check_epoch
        if check == 1:
            raise ValueError(
                "search.dead_check_epoch 1: the not-learning check compares with epoch 1, so it needs 2 or later (0: off)"
            )
        if check is not None and check > self.proxy.epochs:
            raise ValueError(
                f"search.dead_check_epoch {check} is after the last proxy epoch ({self.proxy.epochs}); "
                "use at most proxy.epochs, or 0 to turn the check off"
            )
        if (
            not _plugin_loss_for(self.training.loss, self.problem)
            and self.training.loss not in _BUILTIN_LOSSES
        ):
            raise ValueError(f"training.loss: {self.training.loss!r} is not a {self.problem} loss")
        for loss in self.search.losses or []:
            if loss not in LOSS_CHOICES[self.problem] and not _plugin_loss_for(loss, self.problem):
                allowed = [*LOSS_CHOICES[self.problem], *_plugin_losses(self.problem)]
                raise ValueError(
                    f"search.losses: {loss!r} is not a {self.problem} loss{did_you_mean(loss, allowed)}; choose from {', '.join(allowed)}"
                )
        self._check_imbalance_remedies()
        if self.search.fidelity == "ladder" and self.search.reevaluate.top:
            raise ValueError(
                "search.reevaluate: re-evaluation retrains at the flat proxy and is not built for "
                "search.fidelity: ladder (its candidates reach full resolution; `mednas retrain` adds seeds)"
            )
        return self

    def _check_imbalance_remedies(self) -> None:
        """Refuse settings that always combine a class-weighted loss with balanced sampling (unless allowed)."""
        if self.problem != "classification" or self.training.stack_imbalance_remedies:
            return
        weighted = {"weighted_ce", "focal"} | {
            loss
            for loss in [*(self.search.losses or []), self.training.loss]
            if loss not in _BUILTIN_LOSSES and getattr(registered("loss", loss), "class_weighted", False)
        }
        fix = "; set training.stack_imbalance_remedies: true to combine them on purpose"
        samplings = self.search.sampling or [self.training.sampling]
        if samplings == ["balanced"]:
            losses = self.search.losses or [self.training.loss]
            both = [loss for loss in losses if loss in weighted]
            if both:
                where = "search.losses" if self.search.losses else "training.loss"
                raise ValueError(
                    f"{where}: {', '.join(both)} weights the loss by class while every batch is already "
                    "class-balanced (sampling: balanced): the class prior would be corrected twice. Use "
                    "`ce` (or `auto`) with balanced sampling, or uniform sampling with the weighted loss"
                    + fix
                )

    @property
    def dead_check_epoch(self) -> int:
        """The proxy epoch of the not-learning check (0: no check before the end of training)."""
        check = self.search.dead_check_epoch
        if check is None:
            # Automatic: only where it saves training, i.e. before the last epoch.
            check = max(2, self.proxy.epochs // 4)
            return check if check < self.proxy.epochs else 0
        return check

    @property
    def n_classes(self) -> int:
        """Number of output classes."""
        return len(self.labels.names)
