"""Run an exported bundle on new images: ``mednas.load(bundle)(path)`` and ``mednas predict``.

Loading verifies ``checksums.sha256`` first (and, when asked, the pinned digest and the HMAC signature), checks the
recorded architecture against the allowed network classes before importing anything it names, and reads the weights
with ``torch.load(..., weights_only=True)``; the network is rebuilt from its recorded MONAI class and arguments. A
NaN or infinite network output fails its case: it never becomes a label. Images are read with :func:`mednas.io.read_image`
(DICOM series folders, NIfTI, NRRD, PNG/JPEG/TIFF) and go through the transforms the bundle records
(:class:`~mednas.bundle._pipeline.Pipeline`), the same table its ``inference.json`` was written from, so
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
from typing import Any, NoReturn

import numpy as np

from mednas.bundle._pipeline import Pipeline, instantiate
from mednas.bundle._verify import BundleError, bundle_digest, check_digest, verify_checksums, verify_signature
from mednas.errors import DataError, MednasError
from mednas.io import MedImage

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "OUTPUT_FORMATS",
    "BundleModel",
    "Prediction",
    "PredictionError",
    "load_bundle",
    "predict_to_dir",
]

BACKENDS = ("torch", "torchscript", "onnx", "onnx-int8")
OUTPUT_FORMATS = ("auto", "nifti", "dicom-seg")
_REQUIRED = ("configs/metadata.json", "configs/inference.json", "models/model.pt")
_BACKEND_FILE = {
    "torch": "models/model.pt",
    "torchscript": "models/model.ts",
    "onnx": "models/model.onnx",
    "onnx-int8": "models/model_int8.onnx",
}


class PredictionError(MednasError):
    """A case has no answer: the model's output for it was NaN or infinite (exit status 7).

    Attributes:
        failures: ``(case, reason)`` of every failed case (from :func:`predict_to_dir`; one for a single case).
        predictions: The cases that did get an answer.
        files: Files written for them.
    """

    exit_code = 7

    def __init__(
        self,
        message: str,
        failures: list[tuple[str, str]] | None = None,
        predictions: list[Prediction] | None = None,
        files: list[Path] | None = None,
    ) -> None:
        super().__init__(message)
        self.failures = failures or []
        self.predictions = predictions or []
        self.files = files or []


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
        #: The bundle digest (set by :func:`load_bundle`).
        self.digest: str | None = None

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

    def __call__(
        self, inputs: str | os.PathLike[str] | MedImage | Sequence[str | os.PathLike[str] | MedImage]
    ) -> Any:
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
        tensor = MetaTensor(
            torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)),
            affine=torch.as_tensor(np.asarray(image.affine, dtype=np.float64)),
        )
        data = self._pre({"image": tensor})
        with torch.no_grad():
            data["pred"] = self._inferer(data["image"][None], self._network)[0]
        _require_finite(data["pred"], where, "network output")
        out = self._post(data)
        for key in ("pred", "finding_score"):
            if key in out and self.pipeline.problem == "classification":
                _require_finite(out[key], where, "probability" if key == "pred" else "finding score")
        return out

    def _conform(self, image: MedImage, where: str) -> np.ndarray:
        p = self.pipeline
        array = np.asarray(image.array)
        if p.spatial_dims == 2 and array.ndim == 4 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim - 1 != p.spatial_dims:
            raise DataError(
                f"{where}: image has {array.ndim - 1} spatial dimensions; this model takes {p.spatial_dims}D images"
            )
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
            return Prediction(
                case=case,
                label=_label(probs, p, decision),
                probabilities={n: float(v) for n, v in zip(p.class_names, probs)},
                finding_score=score,
                decision=decision,
                threshold=p.threshold,
                source=self.source,
            )
        mask = np.asarray(out["pred"]).astype(np.uint8)
        if mask.shape[1:] != image.array.shape[1 : 1 + p.spatial_dims]:
            raise MednasError(
                f"{case}: mask shape {mask.shape[1:]} differs from the input's {image.array.shape[1:]}"
            )
        meta = {
            "format": "nifti",
            "source": "mednas predict",
            "modality": image.meta.get("modality"),
            "classes": list(p.class_names),
            "model": self.source,
        }
        return Prediction(
            case=case, mask=MedImage(mask, np.asarray(image.affine, dtype=float), meta), source=self.source
        )


def _require_finite(value: Any, where: str, what: str) -> None:
    array = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.float64)
    bad = ~np.isfinite(array)
    if bad.any():
        kinds = sorted({"NaN" if np.isnan(v) else "infinite" for v in array[bad].reshape(-1)[:1000]})
        raise PredictionError(
            f"{where}: {what} has {int(bad.sum())} {' and '.join(kinds)} value(s); no prediction "
            "for this case (the bundle's weights may be corrupt)",
            [(where, f"non-finite {what}")],
        )


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


def load_bundle(
    bundle: str | os.PathLike[str],
    *,
    backend: str = "torch",
    device: str = "cpu",
    expect_digest: str | None = None,
    verify_key: str | os.PathLike[str] | None = None,
) -> BundleModel:
    """Verify a bundle (checksums, then digest and signature when asked) and load it for prediction.

    Args:
        bundle: The bundle folder (what ``mednas export`` wrote).
        backend: ``torch`` (the state dict in the recorded MONAI class), ``torchscript``, ``onnx`` (ONNX Runtime)
            or ``onnx-int8`` (the INT8 model ``mednas export --quantize int8`` wrote, in ONNX Runtime).
        device: Torch device for the ``torch`` and ``torchscript`` backends.
        expect_digest: The bundle digest ``mednas export`` printed (64 hex digits); any other bundle is refused.
        verify_key: Key file the bundle was signed with (``mednas export --sign-key``); an unsigned bundle or a
            wrong signature is refused.

    Returns:
        A :class:`BundleModel`.

    Raises:
        BundleError: One line, for a missing, changed or unlisted file (``onnx-int8``: a bundle exported without
            ``--quantize int8`` says so), a digest or signature mismatch, an
            architecture that is not an allowed network class, weights that are not a plain state dict, or a folder
            that is not a mednas bundle.

    Example:
        >>> model = load_bundle("runs/demo/bundle")  # doctest: +SKIP
        >>> model("chest.png").label  # doctest: +SKIP
        'nodule'
    """
    from mednas.io import read_json
    from mednas.spec import load_spec

    if backend not in BACKENDS:
        raise MednasError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    root = Path(bundle)
    model_file = _BACKEND_FILE[backend]
    int8 = backend == "onnx-int8"
    digests = verify_checksums(root, required=_REQUIRED if int8 else (*_REQUIRED, model_file))
    if int8 and model_file not in digests:
        raise BundleError(
            f"{root / model_file}: this bundle has no INT8 model; export one with mednas export RUN --quantize int8"
        )
    digest = bundle_digest(root, digests)
    if expect_digest is not None:
        check_digest(root, digest, expect_digest)
    if verify_key is not None:
        verify_signature(root, digest, verify_key)
    meta_file = root / "configs" / "metadata.json"
    meta = read_json(meta_file)
    if not isinstance(meta, dict) or not isinstance(meta.get("mednas"), dict):
        raise BundleError(
            f"{root}: configs/metadata.json has no mednas section; not a bundle mednas exported"
        )
    info = meta["mednas"]
    # Before anything the bundle names is imported or built, whichever backend runs.
    spec = load_spec(info.get("spec"), meta_file, error=BundleError)
    try:
        Pipeline.from_dict(info["pipeline"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise BundleError(
            f"{meta_file}: mednas.pipeline is not a valid pipeline record ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:120]}); refusing the bundle"
        ) from None
    network = _load_network(root, spec, backend, device, members=_ensemble_size(info, meta_file))
    if info.get("source") == "proxy":
        logger.warning(
            "%s holds a %s: short low-resolution proxy weights, never retrained or tested",
            root,
            info.get("source_label", "proxy candidate"),
        )
    model = BundleModel(root, meta, network, backend)
    model.digest = digest
    return model


def _ensemble_size(info: dict[str, Any], meta_file: Path) -> int:
    """How many members an ensemble bundle's network averages (0: a single network)."""
    ens = info.get("ensemble")
    if ens is None:
        return 0
    k = ens.get("k") if isinstance(ens, dict) else None
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 64:
        raise BundleError(
            f"{meta_file}: mednas.ensemble.k must be an integer from 1 to 64; refusing the bundle"
        )
    return k


def _load_network(root: Path, spec: Any, backend: str, device: str, *, members: int = 0) -> Any:
    """Load the backend's model file; anything but a plain state dict / TorchScript / ONNX model is one line.

    ``members`` > 0: the state dict is that of an ensemble of so many networks of ``spec`` (``mednas export
    --ensemble``), rebuilt as :class:`~mednas.train.EnsembleNet` from the spec alone.
    """
    import torch

    from mednas.spec import build

    info_file = _BACKEND_FILE[backend]
    path = root / info_file
    if backend in ("onnx", "onnx-int8"):
        from mednas.bundle._convert import check_onnx_available, onnx_session

        check_onnx_available()
        try:
            return _OnnxNetwork(onnx_session(path))
        except Exception:  # noqa: BLE001 - onnxruntime raises its own exception types for a corrupt file
            raise BundleError(f"{path}: not a valid ONNX model; refusing the bundle") from None
    if backend == "torchscript":
        try:
            return torch.jit.load(str(path), map_location=device).eval()
        except Exception:  # noqa: BLE001 - RuntimeError, pickle errors, zip errors for a corrupt archive
            raise BundleError(f"{path}: not a valid TorchScript archive; refusing the bundle") from None
    if members:
        from mednas.train._ensemble import EnsembleNet

        network = EnsembleNet([build(spec) for _ in range(members)])
    else:
        network = build(spec)
    try:
        # weights_only=True: tensors and plain containers only; a pickle with code in it is refused, never run.
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, zip errors...
        raise BundleError(
            f"{path}: not a plain state dict of tensors (torch.load with weights_only=True refused it); "
            "refusing the bundle"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BundleError(f"{path}: not a plain state dict of tensors; refusing the bundle")
    try:
        network.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(
            f"{path}: weights do not fit {spec.class_name}: {' '.join(str(exc).split())[:200]}"
        ) from None
    return network.to(device).eval()


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


def predict_to_dir(
    model: BundleModel,
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    format: str = "auto",
) -> tuple[list[Prediction], list[Path]]:
    """Predict every input and write the results into ``out``.

    Classification writes ``predictions.csv`` (case, probability per class, finding score, threshold, decision,
    label, model source). Segmentation writes ``<name>_seg.nii.gz`` per input on the input's grid and affine, and
    ``predictions.csv`` with each mask's file and per-class voxel counts and volumes (mL).

    ``format="dicom-seg"`` takes DICOM inputs only (checked before anything is written): segmentation writes
    ``<name>_seg.dcm``, a DICOM Segmentation referencing the source images, instead of the NIfTI mask;
    classification writes ``<name>.json`` (the prediction and the referenced Study/Series/SOP Instance UIDs)
    beside ``predictions.csv``. ``"auto"`` and ``"nifti"`` write NIfTI masks.

    A case whose network output, probabilities or finding score hold a NaN or infinite value gets no row and no
    mask: the other cases are written, the failed ones are listed in ``failed.csv`` (case, reason), and then
    :class:`PredictionError` is raised naming the first of them (``mednas predict`` exits with status 7).

    Returns:
        The predictions and the files written.

    Raises:
        PredictionError: After writing the good cases, when any case failed.
    """
    from mednas.io import write_text

    if format not in OUTPUT_FORMATS:
        raise MednasError(f"format {format!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    if format == "dicom-seg":
        from mednas.bundle._dicom_seg import check_dicom_inputs

        check_dicom_inputs(list(inputs), seg=model.pipeline.problem == "segmentation")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    preds: list[Prediction] = []
    written: list[Path] = []
    p = model.pipeline
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_csv_header(p))
    used: set[str] = set()
    failures: list[tuple[str, str]] = []
    for item in inputs:
        try:
            pred = model.predict_one(item)
        except PredictionError as exc:
            failures.append((os.fspath(item) if not isinstance(item, MedImage) else "image", str(exc)))
            continue
        preds.append(pred)
        writer.writerow(_write_case(model, pred, item, out / _unique_stem(pred.case, used), format, written))
    written.append(write_text(out / "predictions.csv", buf.getvalue()))
    failed_csv = out / "failed.csv"
    if failures:
        _write_failures(failed_csv, failures, preds, written)
    failed_csv.unlink(missing_ok=True)  # from an earlier run into the same folder
    return preds, written


def _csv_header(p: Pipeline) -> list[str]:
    """The columns of ``predictions.csv`` for the pipeline's problem."""
    if p.problem == "classification":
        return [
            "case",
            *[f"p_{n}" for n in p.class_names],
            "finding_score",
            "threshold",
            "decision",
            "label",
            "model",
        ]
    return [
        "case",
        "mask",
        *[f"voxels_{n}" for n in p.class_names],
        *[f"ml_{n}" for n in p.class_names[1:]],
        "model",
    ]


def _classification_row(pred: Prediction, p: Pipeline) -> list[Any]:
    """One classified case's row: probabilities, finding score, threshold and decision."""
    return [
        pred.case,
        *[f"{pred.probabilities[n]:.6f}" for n in p.class_names],
        f"{pred.finding_score:.6f}",
        "" if pred.threshold is None else f"{pred.threshold:.6f}",
        "" if pred.decision is None else int(pred.decision),
        pred.label,
        pred.source,
    ]


def _write_case(
    model: BundleModel, pred: Prediction, item: Any, base: Path, format: str, written: list[Path]
) -> list[Any]:
    """Write a case's files (``base`` plus a suffix; appended to ``written``) and return its CSV row."""
    from mednas.io import write_nifti

    p = model.pipeline
    if pred.mask is None:
        if format == "dicom-seg":
            written.append(_write_dicom(model, pred, item, base.parent / f"{base.name}.json"))
        return _classification_row(pred, p)
    if format == "dicom-seg":
        path = _write_dicom(model, pred, item, base.parent / f"{base.name}_seg.dcm")
    else:
        path = write_nifti(pred.mask, base.parent / f"{base.name}_seg.nii.gz")
    written.append(path)
    return _segmentation_row(pred, p, path)


def _segmentation_row(pred: Prediction, p: Pipeline, path: Path) -> list[Any]:
    """One segmented case's row: its mask file, voxels and mL per class."""
    assert pred.mask is not None
    counts = np.bincount(pred.mask.array.reshape(-1), minlength=len(p.class_names))[: len(p.class_names)]
    voxel_ml = float(np.prod(pred.mask.spacing)) / 1000.0
    return [
        pred.case,
        path.name,
        *[int(c) for c in counts],
        *[f"{c * voxel_ml:.4f}" for c in counts[1:]],
        pred.source,
    ]


def _write_dicom(model: BundleModel, pred: Prediction, item: Any, dest: Path) -> Path:
    """Write a case's DICOM output: the SEG of its mask, or the JSON of its classification."""
    from mednas.bundle._dicom_seg import Algorithm, write_dicom_result, write_dicom_seg

    p = model.pipeline
    task = model.info.get("task") or {}
    algorithm = Algorithm(
        name=str(model.metadata.get("name") or task.get("name") or "mednas model"),
        version=str(model.metadata.get("version") or "unknown"),
        class_names=tuple(p.class_names),
        findings=tuple(p.finding_indices),
        source=model.source,
    )
    if pred.mask is None:
        return write_dicom_result(pred, item, dest, algorithm)
    return write_dicom_seg(pred.mask, item, dest, algorithm)


def _write_failures(
    failed_csv: Path, failures: list[tuple[str, str]], preds: list[Prediction], written: list[Path]
) -> NoReturn:
    """Write ``failed.csv`` (case, reason) and raise :class:`PredictionError` naming the first failure."""
    from mednas.io import write_text

    fbuf = io.StringIO()
    fwriter = csv.writer(fbuf, lineterminator="\n")
    fwriter.writerow(["case", "reason"])
    fwriter.writerows(failures)
    written.append(write_text(failed_csv, fbuf.getvalue()))
    first = failures[0][1]
    more = (
        f" ({len(failures)} of {len(failures) + len(preds)} cases failed, listed in {failed_csv})"
        if len(failures) > 1
        else f" (listed in {failed_csv})"
    )
    raise PredictionError(f"{first}{more}", failures, preds, written)
