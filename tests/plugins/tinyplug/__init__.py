"""A tiny third-party mednas plugin: one search space, one metric term, one dataset layout and one loss.

The tests copy this package into a temporary site folder beside a ``tinyplug-0.1.dist-info`` whose
``entry_points.txt`` names each class in its mednas group, as ``pip install`` of a real plugin would.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from mednas.data import BaseLayout, dataset_from_entries, register_layout
from mednas.metrics import BaseMetricTerm, MetricInputs, MetricTermConfig, register_metric
from mednas.spaces import BaseSearchSpace, SpaceContext, TrialLike, register_space
from mednas.spec import ArchSpec
from mednas.train import BaseLoss, register_loss


@register_space("tinyplug")
class TinyResNetSpace(BaseSearchSpace):
    """One basic block per stage of ``monai.networks.nets.ResNet``; samples the width and the stem kernel."""

    network: ClassVar[str] = "monai.networks.nets.ResNet"
    problems: ClassVar[tuple[Any, ...]] = ("classification",)
    min_input_size: ClassVar[int] = 16
    default_options: ClassVar[dict[str, Any]] = {"widths": [2, 4]}

    def sample(self, trial: TrialLike, ctx: SpaceContext) -> ArchSpec:
        width = trial.suggest_categorical("tinyplug.width", list(self.options["widths"]))
        kernel = trial.suggest_categorical("tinyplug.stem_kernel", [3, 5])
        kwargs = {
            "block": "basic",
            "layers": [1, 1, 1, 1],
            "block_inplanes": [width, width, 2 * width, 2 * width],
            "spatial_dims": ctx.spatial_dims,
            "n_input_channels": ctx.in_channels,
            "conv1_t_size": kernel,
            "conv1_t_stride": 1,
            "no_max_pool": True,
            "shortcut_type": "B",
            "widen_factor": 1.0,
            "num_classes": ctx.out_channels,
        }
        return ArchSpec(self.network, kwargs, self.name, ctx.spatial_dims, ctx.in_channels, ctx.out_channels)


class AccuracyConfig(MetricTermConfig):
    """Accuracy of calling a finding at a fixed cutoff of the finding score."""

    metric: Literal["tinyplug_accuracy"]
    cutoff: float = Field(0.5, gt=0, lt=1)


@register_metric("tinyplug_accuracy")
class CutoffAccuracy(BaseMetricTerm):
    """Share of cases called right when a finding score ``>= cutoff`` calls a finding."""

    config: ClassVar[type[MetricTermConfig]] = AccuracyConfig

    def value(self, term: Any, inputs: MetricInputs) -> float:
        truth = inputs.truth.astype(bool)
        return float(np.mean((inputs.output >= term.cutoff) == truth)) if truth.size else float("nan")

    def resampled(self, term: Any, resamples: Any) -> np.ndarray | None:
        right = ((resamples.score >= term.cutoff) == resamples.truth).astype(float)
        return resamples.weights @ right / resamples.total


@register_layout("tinyplug_tsv")
class TsvLayout(BaseLayout):
    """A headerless tab-separated file: image path, class name, patient."""

    def load(self, task: Any, salt: str, *, run_dir: str | os.PathLike[str] | None = None) -> Any:
        path = Path(task.data.path)
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
        cfg = task.data
        entries = [
            {cfg.image_key: image, cfg.label_key: label, cfg.patient_key: patient}
            for image, label, patient in rows
        ]
        return dataset_from_entries(entries, task, salt, root=path.parent, source=str(path))


@register_loss("tinyplug_smooth_ce")
class SmoothCrossEntropy(BaseLoss):
    """Cross-entropy with label smoothing 0.1."""

    problems: ClassVar[tuple[str, ...]] = ("classification",)

    def build(self, problem: str, n_classes: int, class_weights: Any = None) -> Any:
        import torch

        return torch.nn.CrossEntropyLoss(label_smoothing=0.1)
