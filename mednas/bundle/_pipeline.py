"""The inference pipeline of an exported model, declared once and rendered two ways.

:class:`Pipeline` records what training did to an image (reorientation, intensity normalisation, resize to the
training shape, padding for the network) and what turns network outputs into answers (softmax, the operating
threshold, argmax, inversion onto the input grid). The same table of MONAI transforms becomes the bundle's
``configs/inference.json`` (for MONAI's ConfigParser, no mednas needed) and the objects ``mednas predict`` runs,
so the two cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Expression", "Pipeline", "config_entry", "instantiate", "resize_mode_for"]

#: Classes the predictor instantiates from a pipeline table; anything else is refused.
_ALLOWED = {
    "monai.transforms": {
        "LoadImaged",
        "EnsureChannelFirstd",
        "Orientationd",
        "NormalizeIntensityd",
        "ScaleIntensityRanged",
        "ScaleIntensityRangePercentilesd",
        "Resized",
        "DivisiblePadd",
        "Lambdad",
        "Activationsd",
        "CopyItemsd",
        "AsDiscreted",
        "Invertd",
        "SaveImaged",
        "Compose",
        "EnsureTyped",
    },
    "monai.inferers": {"SimpleInferer", "SlidingWindowInferer"},
}


@dataclass(frozen=True)
class Expression:
    """A function written as a MONAI config expression and as the Python callable it evaluates to.

    Args:
        source: The expression without the leading ``$``, e.g. ``"lambda p: p[[1]].sum(dim=0, keepdim=True)"``.
        func: The same function, for mednas's own predictor (which never evaluates config strings).
    """

    source: str
    func: Callable[..., Any]


@dataclass(frozen=True)
class Pipeline:
    """What an exported model does to an input, as data (``metadata.json["mednas"]["pipeline"]``).

    Args:
        problem: ``"classification"`` or ``"segmentation"``.
        spatial_dims: 2 or 3.
        in_channels: Channels the network takes.
        n_classes: Classes (network output channels).
        class_names: Class names in index order.
        finding_indices: Classes that are findings (their probabilities add up to the finding score).
        normalize: ``zscore``, ``percentile``, ``ct`` or ``none`` (see :func:`mednas.data.normalize_transform`).
        ct_window: HU window of ``ct``.
        orientation: Axis codes volumes are reoriented to (3D: ``"RAS"``); ``None`` for 2D images.
        shape: Spatial shape the weights were trained at; every input is resized to it.
        resize_mode: Interpolation of that resize (``area`` where training shrank images, else linear).
        divisor: Per-axis multiple the network input is padded to (at the end of each axis, with zeros).
        patch: Segmentation trained on patches: sliding-window inference with windows of this size.
        overlap: Overlap of neighbouring windows.
        threshold: Classification operating threshold on the finding score (``>=`` calls a finding), chosen on
            the calibrated probabilities.
        temperature: Classification: post-hoc temperature fitted on validation; logits are divided by it before
            the softmax (``None``: uncalibrated, as in bundles exported before temperature scaling).
    """

    problem: str
    spatial_dims: int
    in_channels: int
    n_classes: int
    class_names: tuple[str, ...]
    finding_indices: tuple[int, ...]
    normalize: str
    ct_window: tuple[float, float]
    orientation: str | None
    shape: tuple[int, ...]
    resize_mode: str
    divisor: tuple[int, ...]
    patch: tuple[int, ...] | None = None
    overlap: float = 0.25
    threshold: float | None = None
    temperature: float | None = None

    @property
    def window(self) -> tuple[int, ...]:
        """The spatial shape the network sees: the patch or the training shape, padded to the divisor."""
        base = self.patch or self.shape
        return tuple(-(-int(s) // int(d)) * int(d) for s, d in zip(base, self.divisor))

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        d = asdict(self)
        for key in ("class_names", "finding_indices", "ct_window", "shape", "divisor"):
            d[key] = list(d[key])
        d["patch"] = list(self.patch) if self.patch else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Pipeline:
        """Rebuild from :meth:`to_dict` output."""
        threshold = d.get("threshold")
        return cls(
            problem=str(d["problem"]),
            spatial_dims=int(d["spatial_dims"]),
            in_channels=int(d["in_channels"]),
            n_classes=int(d["n_classes"]),
            class_names=tuple(str(n) for n in d["class_names"]),
            finding_indices=tuple(int(i) for i in d["finding_indices"]),
            normalize=str(d["normalize"]),
            ct_window=(float(d["ct_window"][0]), float(d["ct_window"][1])),
            orientation=d.get("orientation"),
            shape=tuple(int(s) for s in d["shape"]),
            resize_mode=str(d["resize_mode"]),
            divisor=tuple(int(k) for k in d["divisor"]),
            patch=tuple(int(p) for p in d["patch"]) if d.get("patch") else None,
            overlap=float(d.get("overlap", 0.25)),
            threshold=None if threshold is None or not math.isfinite(float(threshold)) else float(threshold),
            temperature=_temperature(d.get("temperature")),
        )

    # ------------------------------------------------------------------------------------------------ tables

    def preprocessing(self, *, loader: bool) -> list[tuple[str, dict[str, Any]]]:
        """Return the preprocessing transforms as ``(class path, kwargs)``, in order.

        Args:
            loader: Start with ``LoadImaged`` + ``EnsureChannelFirstd`` (the bundle reads files with MONAI's
                readers); mednas's predictor reads with :func:`mednas.io.read_image` and starts after them.
        """
        k = "image"
        steps: list[tuple[str, dict[str, Any]]] = []
        if loader:
            steps.append(("monai.transforms.LoadImaged", {"keys": k, "image_only": True}))
            steps.append(("monai.transforms.EnsureChannelFirstd", {"keys": k}))
        if self.spatial_dims == 2 and self.in_channels == 1:
            # Training turned RGB(A) exports of grey radiographs into grey by averaging the colour channels.
            steps.append(("monai.transforms.Lambdad", {"keys": k, "func": _GREY}))
        if self.orientation:
            # Labels spelled out: MONAI's default is changing to "the tensor's space", which a loader may set to LPS.
            steps.append(
                (
                    "monai.transforms.Orientationd",
                    {"keys": k, "axcodes": self.orientation, "labels": [["L", "R"], ["P", "A"], ["I", "S"]]},
                )
            )
        steps.extend(normalize_entry(self.normalize, self.ct_window))
        steps.append(
            (
                "monai.transforms.Resized",
                {
                    "keys": k,
                    "spatial_size": list(self.shape),
                    "mode": self.resize_mode,
                    "anti_aliasing": False,
                },
            )
        )
        if self.patch is None and any(int(d) > 1 for d in self.divisor):
            steps.append(
                (
                    "monai.transforms.DivisiblePadd",
                    {"keys": k, "k": list(self.divisor), "method": "end", "mode": "constant"},
                )
            )
        return steps

    def inferer(self) -> tuple[str, dict[str, Any]]:
        """Return the inferer as ``(class path, kwargs)``: sliding windows for patch-trained models."""
        if self.patch is not None:
            return (
                "monai.inferers.SlidingWindowInferer",
                {
                    "roi_size": list(self.window),
                    "sw_batch_size": 2,
                    "overlap": self.overlap,
                    "mode": "gaussian",
                },
            )
        return ("monai.inferers.SimpleInferer", {})

    def postprocessing(self, preprocessing: Any, *, save_dir: Any = None) -> list[tuple[str, dict[str, Any]]]:
        """Return the postprocessing transforms as ``(class path, kwargs)``.

        Args:
            preprocessing: What ``Invertd`` inverts: ``"@preprocessing"`` in the config, the Compose in Python.
            save_dir: Segmentation: add ``SaveImaged`` writing masks there (the bundle's config only).
        """
        steps: list[tuple[str, dict[str, Any]]] = []
        if self.problem == "classification" and self.temperature is not None and self.temperature != 1.0:
            # Temperature scaling (fitted on validation): MONAI's own parser evaluates the same expression, so
            # configs/inference.json gives the calibrated probabilities too.
            t = float(self.temperature)
            steps.append(
                (
                    "monai.transforms.Lambdad",
                    {"keys": "pred", "func": Expression(f"lambda x: x / {t!r}", lambda x: x / t)},
                )
            )
        steps.append(("monai.transforms.Activationsd", {"keys": "pred", "softmax": True}))
        if self.problem == "classification":
            idx = list(self.finding_indices)
            steps.append(
                (
                    "monai.transforms.Lambdad",
                    {
                        "keys": "pred",
                        "overwrite": "finding_score",
                        "func": Expression(
                            f"lambda p: p[{idx}].sum(dim=0, keepdim=True)",
                            lambda p: p[idx].sum(dim=0, keepdim=True),
                        ),
                    },
                )
            )
            if self.threshold is not None:
                steps.append(("monai.transforms.CopyItemsd", {"keys": "finding_score", "names": "decision"}))
                steps.append(
                    ("monai.transforms.AsDiscreted", {"keys": "decision", "threshold": self.threshold})
                )
            return steps
        steps.append(
            (
                "monai.transforms.Invertd",
                {
                    "keys": "pred",
                    "transform": preprocessing,
                    "orig_keys": "image",
                    "nearest_interp": False,
                    "to_tensor": True,
                },
            )
        )
        steps.append(("monai.transforms.AsDiscreted", {"keys": "pred", "argmax": True}))
        if save_dir is not None:
            steps.append(
                (
                    "monai.transforms.SaveImaged",
                    {
                        "keys": "pred",
                        "output_dir": save_dir,
                        "output_postfix": "seg",
                        "output_dtype": "$np.uint8",
                        "resample": False,
                        "separate_folder": False,
                        "print_log": False,
                    },
                )
            )
        return steps


def _temperature(value: Any) -> float | None:
    """A recorded temperature, checked: a positive finite number or None."""
    if value is None:
        return None
    t = float(value)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"pipeline temperature must be a positive finite number, got {value!r}")
    return t


def _grey(x: Any) -> Any:
    return x[:3].mean(dim=0, keepdim=True) if x.shape[0] in (3, 4) else x


_GREY = Expression("lambda x: x[:3].mean(dim=0, keepdim=True) if x.shape[0] in (3, 4) else x", _grey)


def normalize_entry(how: str, ct_window: Sequence[float]) -> list[tuple[str, dict[str, Any]]]:
    """The dictionary form of :func:`mednas.data.normalize_transform` (same class, same arguments).

    ``tests/bundle`` checks that both give the same values, so a change there shows up here.
    """
    k = "image"
    if how == "zscore":
        return [("monai.transforms.NormalizeIntensityd", {"keys": k, "nonzero": True, "channel_wise": True})]
    if how == "percentile":
        return [
            (
                "monai.transforms.ScaleIntensityRangePercentilesd",
                {
                    "keys": k,
                    "lower": 0.5,
                    "upper": 99.5,
                    "b_min": 0.0,
                    "b_max": 1.0,
                    "clip": False,
                    "channel_wise": True,
                },
            )
        ]
    if how == "ct":
        lo, hi = (float(v) for v in ct_window)
        return [
            (
                "monai.transforms.ScaleIntensityRanged",
                {"keys": k, "a_min": lo, "a_max": hi, "b_min": 0.0, "b_max": 1.0, "clip": True},
            )
        ]
    return []


def resize_mode_for(shapes: Sequence[Sequence[int]], target: Sequence[int]) -> tuple[str, dict[str, int]]:
    """Choose the resize interpolation that training used for most cases.

    Training resizes a case with ``area`` averaging when every axis shrinks (or stays), and with (bi/tri)linear
    interpolation otherwise. A static pipeline has one mode; it takes the majority of the training cases
    (ties and no cases: ``area``).

    Args:
        shapes: Case shapes in the orientation the network sees (RAS for volumes).
        target: The training shape.

    Returns:
        ``(mode, {"area": n, "linear": m})``.
    """
    n_down = sum(all(int(t) <= int(s) for t, s in zip(target, shape)) for shape in shapes)
    n_up = len(shapes) - n_down
    linear = "bilinear" if len(target) == 2 else "trilinear"
    return ("area" if n_down >= n_up else linear), {"area": int(n_down), "linear": int(n_up)}


# --------------------------------------------------------------------------------------------- rendering


def config_entry(name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Render one ``(class path, kwargs)`` entry as a MONAI config component (``{"_target_": ...}``)."""
    out: dict[str, Any] = {"_target_": name}
    for key, value in kwargs.items():
        out[key] = f"${value.source}" if isinstance(value, Expression) else value
    return out


def instantiate(name: str, kwargs: Mapping[str, Any]) -> Any:
    """Build one ``(class path, kwargs)`` entry as a Python object, for classes on the allow-list only.

    Raises:
        ValueError: For a class outside the allow-list, or a config-only string expression.
    """
    import importlib

    module, _, cls_name = name.rpartition(".")
    if cls_name not in _ALLOWED.get(module, set()):
        raise ValueError(f"{name} is not a transform mednas instantiates")
    args: dict[str, Any] = {}
    for key, value in kwargs.items():
        if isinstance(value, Expression):
            value = value.func
        elif isinstance(value, str) and value.startswith(("$", "@", "%")):
            raise ValueError(
                f"{name}.{key}: config expression {value!r} cannot be instantiated outside MONAI's parser"
            )
        args[key] = value
    return getattr(importlib.import_module(module), cls_name)(**args)
