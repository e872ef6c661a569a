"""Run an exported bundle on new images: ``mednas.load(bundle)(path)`` and ``mednas predict``.

Loading verifies ``checksums.sha256`` first and reads the weights with ``torch.load(..., weights_only=True)``; the
network is rebuilt from its recorded MONAI class and arguments. Images are read with :func:`mednas.io.read_image`
(DICOM series folders, NIfTI, NRRD, PNG/JPEG/TIFF) and go through the transforms the bundle records
(:class:`~mednas.export._pipeline.Pipeline`), the same table its ``inference.json`` was written from, so
``mednas predict`` and MONAI running the bundle agree. Masks come back on the input's own grid and affine.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mednas.errors import DataError, MednasError
from mednas.export._pipeline import Pipeline, instantiate
from mednas.export._verify import BundleError, verify_checksums
from mednas.io import MedImage

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "BundleModel", "Prediction", "load_bundle", "predict_to_dir"]

BACKENDS = ("torch", "torchscript", "onnx")
_REQUIRED = ("configs/metadata.json", "configs/inference.json", "models/model.pt")
_BACKEND_FILE = {"torch": "models/model.pt", "torchscript": "models/model.ts", "onnx": "models/model.onnx"}


@dataclass
class Prediction:
    """The model's answer for one input.

    Attributes:
        case: The input as the caller named it (path as given, or ``"image"`` for an in-memory image).
        label: Classification: the predicted class name (at the exported operating threshold); segmentation:
            ``None``.
        probabilities: Classification: class name -> probability; segmentation: empty.
        finding_score: Classification: summed probability of the finding classes.
        decision: Classification: ``finding_score >= threshold`` (``None`` without a threshold).
        threshold: The operating threshold applied.
        mask: Segmentation: the label map as a :class:`~mednas.io.MedImage` ``(1, *input spatial shape)``
            with the input's affine; classification: ``None``.
        source: ``"retrained"`` or ``"proxy candidate, not retrained"``.
    """

    case: str
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    finding_score: float | None = None
    decision: bool | None = None
    threshold: float | None = None
    mask: MedImage | None = None
    source: str = ""


class BundleModel:
    """A verified, loaded bundle that predicts from image paths or :class:`~mednas.io.MedImage` objects.

    Example:
        >>> model = mednas.load("runs/demo/bundle")  # doctest: +SKIP
        >>> result = model("scan.nii.gz")  # doctest: +SKIP
        >>> result.mask.array.shape  # doctest: +SKIP
    """

    def __init__(self, root: Path, metadata: dict[str, Any], network: Any, backend: str) -> None:
        self.root = root
        self.metadata = metadata
        self.info: dict[str, Any] = metadata["mednas"]
        self.pipeline = Pipeline.from_dict(self.info["pipeline"])
        self.backend = backend
        self._network = network
        self._pre = _compose(self.pipeline.preprocessing(loader=False))
        self._inferer = instantiate(*self.pipeline.inferer())
        self._post = _compose(self.pipeline.postprocessing(self._pre))

    @property
    def is_proxy(self) -> bool:
        """True when the bundle holds proxy weights that were never retrained."""
        return self.info.get("source") == "proxy"

    @property
    def source(self) -> str:
        """``"retrained"`` or ``"proxy candidate, not retrained"``."""
        return str(self.info.get("source_label") or self.info.get("source"))

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names in output-channel order."""
        return self.pipeline.class_names

    def __call__(self, inputs: str | os.PathLike[str] | MedImage | Sequence[str | os.PathLike[str] | MedImage]) -> Any:
        """Predict one input (returns a :class:`Prediction`) or several (returns a list).

        Args:
            inputs: Image file, DICOM series folder, or :class:`~mednas.io.MedImage`; or a list of them.

        Raises:
            DataError: For an unreadable image, or one whose dimensions or channels the model cannot take.
        """
        if isinstance(inputs, (str, os.PathLike, MedImage)):
            return self.predict_one(inputs)
        return [self.predict_one(x) for x in inputs]

    def predict_one(self, item: str | os.PathLike[str] | MedImage, *, name: str | None = None) -> Prediction:
        """Predict one image; ``name`` overrides the case name shown in outputs."""
        from mednas.io import read_image

        if isinstance(item, MedImage):
            image, case = item, name or "image"
        else:
            case = name or os.fspath(item).rstrip("/\\") or os.fspath(item)
            image = read_image(item)
        output = self.run(image, where=case)
        return self._answer(case, image, output)

    def run(self, image: MedImage, *, where: str = "image") -> dict[str, Any]:
        """Run preprocessing, the network and postprocessing on an image; return MONAI's output dictionary."""
        import torch
        from monai.data import MetaTensor

        array = self._conform(image, where)
        tensor = MetaTensor(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)),
                            affine=torch.as_tensor(np.asarray(image.affine, dtype=np.float64)))
        data = self._pre({"image": tensor})
        with torch.no_grad():
            data["pred"] = self._inferer(data["image"][None], self._network)[0]
        return self._post(data)

    def _conform(self, image: MedImage, where: str) -> np.ndarray:
        p = self.pipeline
        array = np.asarray(image.array)
        if p.spatial_dims == 2 and array.ndim == 4 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim - 1 != p.spatial_dims:
            raise DataError(f"{where}: image has {array.ndim - 1} spatial dimensions; this model takes {p.spatial_dims}D images")
        grey = p.spatial_dims == 2 and p.in_channels == 1 and array.shape[0] in (3, 4)
        if array.shape[0] != p.in_channels and not grey:
            raise DataError(f"{where}: image has {array.shape[0]} channels; this model takes {p.in_channels}")
        return array

    def _answer(self, case: str, image: MedImage, out: dict[str, Any]) -> Prediction:
        p = self.pipeline
        if p.problem == "classification":
            probs = np.asarray(out["pred"], dtype=np.float64).reshape(-1)
            score = float(np.asarray(out["finding_score"]).reshape(-1)[0])
            decision = bool(np.asarray(out["decision"]).reshape(-1)[0]) if "decision" in out else None
            return Prediction(case=case, label=_label(probs, p, decision),
                              probabilities={n: float(v) for n, v in zip(p.class_names, probs)},
                              finding_score=score, decision=decision, threshold=p.threshold, source=self.source)
        mask = np.asarray(out["pred"]).astype(np.uint8)
        if mask.shape[1:] != image.array.shape[1:1 + p.spatial_dims]:
            raise MednasError(f"{case}: mask shape {mask.shape[1:]} differs from the input's {image.array.shape[1:]}")
        meta = {"format": "nifti", "source": "mednas predict", "modality": image.meta.get("modality"),
                "classes": list(p.class_names), "model": self.source}
        return Prediction(case=case, mask=MedImage(mask, np.asarray(image.affine, dtype=float), meta), source=self.source)


def _label(probs: np.ndarray, p: Pipeline, decision: bool | None) -> str:
    findings = list(p.finding_indices)
    others = [i for i in range(len(probs)) if i not in findings]
    if decision is None:
        return p.class_names[int(np.argmax(probs))]
    pool = findings if decision else (others or findings)
    return p.class_names[max(pool, key=lambda i: probs[i])]


def _compose(entries: list[tuple[str, dict[str, Any]]]) -> Any:
    from monai.transforms import Compose

    return Compose([instantiate(name, kwargs) for name, kwargs in entries])


def load_bundle(bundle: str | os.PathLike[str], *, backend: str = "torch", device: str = "cpu") -> BundleModel:
    """Verify a bundle's checksums and load it for prediction.

    Args:
        bundle: The bundle folder (what ``mednas export`` wrote).
        backend: ``torch`` (the state dict in the recorded MONAI class), ``torchscript`` or ``onnx`` (ONNX Runtime).
        device: Torch device for the ``torch`` and ``torchscript`` backends.

    Returns:
        A :class:`BundleModel`.

    Raises:
        BundleError: One line, for a missing, changed or unlisted file, or a folder that is not a mednas bundle.

    Example:
        >>> model = load_bundle("runs/demo/bundle")  # doctest: +SKIP
        >>> model("chest.png").label  # doctest: +SKIP
        'nodule'
    """
    import torch

    from mednas.io import read_json
    from mednas.spec import ArchSpec, build

    if backend not in BACKENDS:
        raise MednasError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    root = Path(bundle)
    verify_checksums(root, required=(*_REQUIRED, _BACKEND_FILE[backend]))
    meta = read_json(root / "configs" / "metadata.json")
    if not isinstance(meta, dict) or "mednas" not in meta:
        raise BundleError(f"{root}: configs/metadata.json has no mednas section; not a bundle mednas exported")
    info = meta["mednas"]
    if info.get("source") == "proxy":
        logger.warning("%s holds a %s: short low-resolution proxy weights, never retrained or tested", root,
                       info.get("source_label", "proxy candidate"))
    if backend == "onnx":
        from mednas.export._convert import check_onnx_available, onnx_session

        check_onnx_available()
        network: Any = _OnnxNetwork(onnx_session(root / "models" / "model.onnx"))
    elif backend == "torchscript":
        network = torch.jit.load(str(root / "models" / "model.ts"), map_location=device).eval()
    else:
        try:
            network = build(ArchSpec.from_dict(info["spec"]))
            state = torch.load(root / "models" / "model.pt", map_location=device, weights_only=True)
            network.load_state_dict(state)
        except (ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise BundleError(f"{root}: cannot load the network: {' '.join(str(exc).split())[:200]}") from exc
        network = network.to(device).eval()
    return BundleModel(root, meta, network, backend)


class _OnnxNetwork:
    """Callable wrapper so MONAI inferers can run an ONNX Runtime session like a torch module."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def __call__(self, x: Any) -> Any:
        import torch

        out = self.session.run(None, {"image": x.detach().cpu().numpy().astype(np.float32)})[0]
        return torch.from_numpy(out)


def _unique_stem(case: str, used: set[str]) -> str:
    name = Path(case.rstrip("/\\")).name or "image"
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".png", ".jpeg", ".jpg", ".tiff", ".tif", ".dcm"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    stem, k = name, 2
    while stem in used:
        stem, k = f"{name}-{k}", k + 1
    used.add(stem)
    return stem


def predict_to_dir(model: BundleModel, inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> tuple[list[Prediction], list[Path]]:
    """Predict every input and write the results into ``out``.

    Classification writes ``predictions.csv`` (case, probability per class, finding score, threshold, decision,
    label, model source). Segmentation writes ``<name>_seg.nii.gz`` per input on the input's grid and affine, and
    ``predictions.csv`` with each mask's file and per-class voxel counts and volumes (mL).

    Returns:
        The predictions and the files written.
    """
    from mednas.io import write_nifti, write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    preds: list[Prediction] = []
    written: list[Path] = []
    p = model.pipeline
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    used: set[str] = set()
    if p.problem == "classification":
        writer.writerow(["case", *[f"p_{n}" for n in p.class_names], "finding_score", "threshold", "decision", "label", "model"])
    else:
        writer.writerow(["case", "mask", *[f"voxels_{n}" for n in p.class_names], *[f"ml_{n}" for n in p.class_names[1:]], "model"])
    for item in inputs:
        pred = model.predict_one(item)
        preds.append(pred)
        if p.problem == "classification":
            writer.writerow([pred.case, *[f"{pred.probabilities[n]:.6f}" for n in p.class_names], f"{pred.finding_score:.6f}",
                             "" if pred.threshold is None else f"{pred.threshold:.6f}",
                             "" if pred.decision is None else int(pred.decision), pred.label, pred.source])
        else:
            assert pred.mask is not None
            path = out / f"{_unique_stem(pred.case, used)}_seg.nii.gz"
            written.append(write_nifti(pred.mask, path))
            counts = np.bincount(pred.mask.array.reshape(-1), minlength=len(p.class_names))[: len(p.class_names)]
            voxel_ml = float(np.prod(pred.mask.spacing)) / 1000.0
            writer.writerow([pred.case, path.name, *[int(c) for c in counts], *[f"{c * voxel_ml:.4f}" for c in counts[1:]],
                             pred.source])
    written.append(write_text(out / "predictions.csv", buf.getvalue()))
    return preds, written
