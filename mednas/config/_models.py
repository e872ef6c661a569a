"""Typed, frozen models of a task file: what the data is, what a good model means, how to search.

Every model forbids unknown keys and suggests the closest known one, so a typo never silently falls back
to a default. The documentation in ``docs/task-reference.md`` is generated from these classes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from mednas._registry import did_you_mean


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


# --------------------------------------------------------------------------------------------------- data


class SplitConfig(Strict):
    """How cases are divided into train, validation and test, always grouped by patient."""

    val: float = Field(0.2, gt=0, lt=1, description="Fraction of patients for validation (operating point, pruning).")
    test: float = Field(0.2, ge=0, lt=1, description="Fraction of patients held out for the final test; never read during search.")
    folds: int | None = Field(None, ge=2, description="k-fold cross-validation over train+val patients (None: one split).")
    fold: int = Field(0, ge=0, description="Which fold is the validation fold when `folds` is set.")
    stratify: bool = Field(True, description="Stratify by label (classification) or by lesion presence (segmentation).")

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.val + self.test >= 0.9:
            raise ValueError(f"val + test = {self.val + self.test:g} leaves too little for training (must be < 0.9)")
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"fold {self.fold} does not exist with {self.folds} folds")
        return self


class DataConfig(Strict):
    """Where the images are and how to read them. Paths are relative to the task file; ``${VAR}`` expands."""

    format: Literal["demo", "datalist", "decathlon", "csv", "folders", "medmnist"] = Field(
        description="Dataset layout: `demo` (built-in simulated data), `datalist` (MONAI datalist JSON), "
        "`decathlon` (dataset.json + imagesTr/labelsTr), `csv` (sheet of image, label, patient), "
        "`folders` (one folder per class), `medmnist` (.npz)."
    )
    path: str | None = Field(None, description="Datalist/CSV/npz file or dataset folder (not for `demo`).")
    demo: str | None = Field(None, description="Demo dataset name for `format: demo` (xray-nodule, mri-lesion).")
    n_cases: int | None = Field(None, ge=4, description="Number of demo cases to simulate (`demo` only).")
    seed: int = Field(0, ge=0, description="Seed of simulated data (`demo`), independent of the search seed so searches compare on the same data.")
    image_key: str = Field("image", description="Datalist/CSV field with the image path.")
    label_key: str = Field("label", description="Datalist/CSV field with the label (class index, class name or mask path).")
    patient_key: str = Field("patient", description="Datalist/CSV field with the patient identifier (hashed on read).")
    dicom_patient_id: bool = Field(
        True, description="When a case has no patient field and is DICOM, group by its PatientID (stored only hashed)."
    )
    series: str | None = Field(None, description="DICOM series to select in folders that hold several.")
    normalize: Literal["auto", "zscore", "percentile", "ct", "none"] = Field(
        "auto", description="Intensity normalisation: `auto` follows the fingerprint (CT: HU window; MR: z-score on the foreground; else percentiles)."
    )
    ct_window: tuple[float, float] | None = Field(
        None, description="HU window for `ct` normalisation; unset: the fingerprint's suggestion (0.5-99.5% of the labelled or body intensities), else -1000..1000."
    )
    split: SplitConfig = Field(default_factory=SplitConfig)  # type: ignore[arg-type]
    cache_dir: str | None = Field(None, description="Proxy cache folder (default: $MEDNAS_CACHE_DIR or ~/.cache/mednas).")
    label_threshold: float | None = Field(
        None, description="Segmentation masks are `label > label_threshold` (e.g. a skull-stripped image as a brain "
        "mask); unset: label files hold class indices. Binarised masks are materialised once into the cache."
    )
    augment_copies: int = Field(
        0, ge=0, description="Add N augmented copies of every case (MONAI random affine, elastic, bias field, noise), "
        "made once into the cache, seeded by `data.seed`. For datasets with too few subjects: figures then "
        "measure robustness to augmentation, not generalisation to new patients."
    )
    augment_group: Literal["patient", "copy"] = Field(
        "patient", description="How augmented copies are split: `patient` keeps every copy with its source patient; "
        "`copy` makes each copy its own split unit (single-subject data; splits then share the subject)."
    )
    augment_spacing: float | None = Field(
        None, gt=0, description="Resample axes finer than this (mm) before augmenting, so copies stay small; unset: keep."
    )

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.format == "demo":
            if not self.demo:
                raise ValueError("`demo` must name a demo dataset when format is 'demo'")
        elif not self.path:
            raise ValueError(f"`path` is required for format {self.format!r}")
        return self


class LabelsConfig(Strict):
    """Class names and which of them are clinical findings."""

    names: list[str] = Field(min_length=2, description="Class names in index order (segmentation: 0 is background).")
    findings: list[str] = Field(default_factory=list, description="Classes that are clinical findings (default: all but the first).")

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


class _Metric(Strict):
    weight: float = Field(1.0, description="Weight of this term in a weighted sum.")


class SensitivityAtSpecificity(_Metric):
    """Highest sensitivity for the findings whose specificity on validation is at least the floor."""

    metric: Literal["sensitivity_at_specificity"]
    min_specificity: float = Field(0.9, gt=0, lt=1)


class SpecificityAtSensitivity(_Metric):
    """Highest specificity whose sensitivity on validation is at least the floor."""

    metric: Literal["specificity_at_sensitivity"]
    min_sensitivity: float = Field(0.9, gt=0, lt=1)


class AUROC(_Metric):
    """Area under the ROC curve of the finding score."""

    metric: Literal["auroc"]


class Dice(_Metric):
    """Mean Dice over cases of the finding classes (empty prediction on empty truth counts 1)."""

    metric: Literal["dice"]


class LesionSensitivity(_Metric):
    """Fraction of ground-truth lesions (connected components) the prediction detects, pooled over cases.

    ``overlap`` says when a lesion counts as detected: ``any`` (one predicted voxel touches it),
    ``iou>=x`` (IoU of the lesion with the predicted components touching it) or ``fraction>=x`` (share of the
    lesion's voxels predicted). ``any`` is the classic rule but a model that paints the whole image detects
    everything; ``iou>=0.1`` still counts a rough hit and refuses such a blob.
    """

    metric: Literal["lesion_sensitivity"]
    overlap: str = Field("any", pattern=r"^(any|(iou|fraction)>=(0?\.\d+|1(\.0+)?))$", description="Detection rule: any, iou>=x or fraction>=x.")


Term = Annotated[
    SensitivityAtSpecificity | SpecificityAtSensitivity | AUROC | Dice | LesionSensitivity,
    Field(discriminator="metric"),
]


class ObjectiveConfig(Strict):
    """What a clinically good model means: one metric, or a weighted sum of metrics, computed on validation.

    ``terms`` with one entry is a single metric; several entries form ``sum(weight * value) / sum(weight)``.
    """

    terms: list[Term] = Field(min_length=1, description="Metric terms (see the metric list in the reference).")

    @model_validator(mode="before")
    @classmethod
    def _single_metric_shorthand(cls, data: Any) -> Any:
        # `objective: {metric: auroc}` is shorthand for `objective: {terms: [{metric: auroc}]}`.
        if isinstance(data, dict) and "metric" in data and "terms" not in data:
            return {"terms": [data]}
        return data

    @property
    def name(self) -> str:
        """A readable name, e.g. ``sensitivity_at_specificity`` or ``0.5*dice+0.5*lesion_sensitivity``."""
        if len(self.terms) == 1:
            return self.terms[0].metric
        total = sum(t.weight for t in self.terms)
        return "+".join(f"{t.weight / total:.2g}*{t.metric}" for t in self.terms)


# ------------------------------------------------------------------------------------------------- search


class BudgetConfig(Strict):
    """Static limits checked before any training; a candidate over budget is rejected in milliseconds."""

    max_params: int | None = Field(None, gt=0, description="Most trainable parameters.")
    max_macs: float | None = Field(None, gt=0, description="Most multiply-accumulates for one full-size input.")
    max_activation_mb: float | None = Field(None, gt=0, description="Most forward activation memory (MB) for one training batch at full size.")


class PrunerConfig(Strict):
    """Early stopping of hopeless trials on their per-epoch validation objective."""

    name: Literal["median", "hyperband", "none"] = Field("median", description="Optuna pruner.")
    startup_trials: int = Field(4, ge=0, description="Trials that are never pruned (median pruner).")
    warmup_epochs: int = Field(1, ge=0, description="Epochs before a trial may be pruned.")

    @model_validator(mode="before")
    @classmethod
    def _name_shorthand(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class SearchConfig(Strict):
    """The Optuna study: which families, which sampler and pruner, how many trials."""

    spaces: list[str] = Field(min_length=1, description="Search-space families (registry keys, see `mednas spaces`).")
    space_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Per-family bounds, e.g. `{resnet: {max_width: 32}}`.")
    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna sampler (seeded).")
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)  # type: ignore[arg-type]
    n_trials: int = Field(20, ge=1, description="Finished trials (complete + pruned) the study should reach.")
    timeout: float | None = Field(None, gt=0, description="Stop starting new trials after this many seconds.")
    seed: int = Field(0, ge=0, description="Task seed: splits, sampler and per-trial seeds derive from it.")
    budget: BudgetConfig = Field(default_factory=BudgetConfig)  # type: ignore[arg-type]
    max_failures: int = Field(10, ge=1, description="Stop the search after this many failed trials in a row.")


class ProxyConfig(Strict):
    """The cheap stand-in for full training used to rank candidates."""

    shape: list[int] | None = Field(None, description="Spatial shape of proxy inputs; default: `scale` times the full shape.")
    scale: float = Field(0.5, gt=0, le=1, description="Proxy shape as a fraction of the full shape (when `shape` is unset).")
    epochs: int = Field(5, ge=1, description="Training epochs per proxy trial.")
    subset: float = Field(1.0, gt=0, le=1, description="Fraction of training cases used by the proxy.")


class TrainingConfig(Strict):
    """The one training loop's settings (proxy trials and full retraining)."""

    shape: list[int] | None = Field(None, description="Full-resolution spatial input shape; default: the fingerprint's median shape.")
    batch_size: int = Field(16, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0, description="Learning rate.")
    weight_decay: float = Field(1e-4, ge=0)
    loss: Literal["auto", "ce", "weighted_ce", "focal", "dice", "dice_ce", "dice_focal", "tversky"] = Field(
        "auto", description="Loss; `auto` is class-weighted CE for classification and Dice+CE for segmentation."
    )
    epochs: int = Field(30, ge=1, description="Full-fidelity epochs (retraining).")
    patience: int = Field(8, ge=1, description="Early stopping patience in epochs on the validation objective (retraining).")
    augment: bool = Field(True, description="Random flips during training.")
    amp: bool = Field(True, description="Automatic mixed precision on CUDA (ignored on CPU).")
    grad_clip: float | None = Field(5.0, gt=0, description="Gradient norm clipping.")


class PrivacyConfig(Strict):
    """What may appear in outputs besides salted case hashes."""

    show_file_names: bool = Field(False, description="Allow source file names in reports and logs (they can hold patient names).")


class TaskConfig(Strict):
    """A clinical task: data, labels, objective, search, proxy and training settings."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Task name (run and study names derive from it).")
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
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="`auto` picks CUDA when present.")

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        for key in ("shape",):
            for section in (self.proxy, self.training):
                shape = getattr(section, key)
                if shape is not None and len(shape) != self.spatial_dims:
                    raise ValueError(f"{type(section).__name__.removesuffix('Config').lower()}.{key} {shape} must have {self.spatial_dims} entries")
        seg_only = {"dice", "lesion_sensitivity"}
        cls_only = {"sensitivity_at_specificity", "specificity_at_sensitivity", "auroc"}
        for term in self.objective.terms:
            if self.problem == "classification" and term.metric in seg_only:
                raise ValueError(f"objective metric {term.metric!r} needs a segmentation task")
            if self.problem == "segmentation" and term.metric in cls_only:
                raise ValueError(f"objective metric {term.metric!r} needs a classification task")
        return self

    @property
    def n_classes(self) -> int:
        """Number of output classes."""
        return len(self.labels.names)
