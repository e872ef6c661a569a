"""``mednas export``: write a run's best candidate as a verified MONAI bundle, atomically.

The bundle is built in a temporary folder beside its destination, checked (TorchScript and ONNX Runtime against
eager PyTorch, mednas's predictor against the bundle's own ``inference.json``, MONAI's metadata and network
checks, checksums), and only then renamed into place; a failed export leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mednas.bundle._convert import (
    FORMATS,
    TOLERANCE,
    Conversion,
    all_finite,
    check_onnx_available,
    eager_outputs,
    export_onnx,
    export_torchscript,
)
from mednas.bundle._ensemble import (
    EnsembleSource,
    ensemble_metadata,
    ensemble_network_def,
    ensemble_source,
    load_ensemble,
)
from mednas.bundle._int8 import (
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_TOLERANCE,
    INT8_FILE,
    Int8Options,
    build_int8,
    check_int8_options,
)
from mednas.bundle._pipeline import Pipeline, config_entry
from mednas.bundle._source import LADDER_FLAG, LADDER_NOTE, PROXY_FLAG, ExportSource, resolve_source
from mednas.bundle._verify import (
    KEY_ENV,
    SCHEMA_URL,
    bundle_digest,
    check_metadata,
    find_schema,
    sign_bundle,
    verify_checksums,
    verify_net_in_out,
    write_checksums,
)
from mednas.errors import ConfigError, MednasError, RunDirError
from mednas.rundir import RunDir
from mednas.tracking import Tracker, open_run_tracker

logger = logging.getLogger(__name__)

__all__ = ["BUNDLE_VERSION", "ExportResult", "export_bundle", "inference_config", "parse_formats"]

BUNDLE_VERSION = "0.1.0"
_READER_PACKAGES = {
    "nibabel": "nibabel",
    "pydicom": "pydicom",
    "pillow": "PIL",
    "pynrrd": "nrrd",
    "pytorch-ignite": "ignite",
}


@dataclass
class ExportResult:
    """What :func:`export_bundle` returns.

    Args:
        path: The bundle folder.
        source: ``"retrained"``, ``"ladder"`` (a top-rung ladder trial, not retrained) or ``"proxy"``.
        trial: The exported trial.
        conversions: Format -> its record (file, method, ``max_abs_diff``, ...).
        checks: What was verified (metadata schema, network in/out, pipeline agreement, checksums).
        metadata: ``configs/metadata.json``.
        seconds: Wall time of the export.
        files: Files in the bundle (relative).
        digest: The bundle digest (SHA-256 over every file's path and SHA-256; ``sha256sum checksums.sha256``): the
            value a validation team pins (``mednas predict --expect-digest``).
        signed: True when ``signature.json`` holds an HMAC-SHA256 of the digest (``--sign-key``).
        int8: With ``quantize="int8"``: the metadata's ``int8`` record (``accepted``; when false, ``reason`` says
            why ``models/model_int8.onnx`` was not written); else ``None``.
    """

    path: Path
    source: str
    trial: int
    conversions: dict[str, dict[str, Any]]
    checks: dict[str, Any]
    metadata: dict[str, Any]
    seconds: float
    files: list[str] = field(default_factory=list)
    digest: str = ""
    signed: bool = False
    int8: dict[str, Any] | None = None

    @property
    def is_proxy(self) -> bool:
        """True when the bundle holds proxy weights (never retrained)."""
        return self.source == "proxy"


def parse_formats(formats: str | Sequence[str] | None) -> tuple[str, ...]:
    """Return the export formats from ``"onnx,torchscript"`` or a list (default: both).

    Raises:
        ConfigError: For an unknown format.
    """
    if formats is None:
        return FORMATS
    items = [
        f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()
    ]
    bad = [f for f in items if f not in FORMATS]
    if bad:
        raise ConfigError(
            f"--format: unknown format {bad[0]!r}; choose from {', '.join(FORMATS)} (comma-separated)"
        )
    return tuple(f for f in FORMATS if f in items)


def export_bundle(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    formats: str | Sequence[str] | None = None,
    schema: str | os.PathLike[str] | None = None,
    license_file: str | os.PathLike[str] | None = None,
    sign_key: str | os.PathLike[str] | None = None,
    quantize: str | None = None,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    int8_tolerance: float = DEFAULT_TOLERANCE,
    ensemble: bool = False,
    mlflow: str | None = None,
) -> ExportResult:
    """Export the run's best candidate as a MONAI bundle.

    Args:
        run_dir: The run directory.
        out: Bundle folder (default ``RUN_DIR/bundle``); an existing mednas bundle there is replaced.
        formats: ``"torchscript"``, ``"onnx"`` or both (default); the state dict is always written.
        schema: MONAI's ``meta_schema_20240725.json`` to check the metadata against (default
            ``$MEDNAS_BUNDLE_SCHEMA``; without one, the schema's required fields are checked).
        license_file: Text for the bundle's ``LICENSE`` (default: a notice that the terms are the data owner's).
        sign_key: Key file (at least 16 bytes; default ``$MEDNAS_BUNDLE_KEY`` when set): ``signature.json`` gets an
            HMAC-SHA256 of the bundle digest, which ``mednas predict --verify-key`` checks.
        quantize: ``"int8"``: also write ``models/model_int8.onnx`` (ONNX Runtime static quantization, needs the
            onnx format), unless the task's objective on the validation split drops by more than
            ``int8_tolerance``; the float32 bundle is written either way.
        calibration_images: Training images the INT8 model is calibrated on (at least 1).
        int8_tolerance: Largest objective drop (float32 minus INT8, on validation) accepted, from 0 to 1.
        ensemble: Export the fold models of ``mednas retrain --folds`` as one network averaging their probabilities
            (``models/model.ts``, the bundle's ``network_def``; see :mod:`mednas.bundle._ensemble`).
        mlflow: MLflow URI to log the bundle to (run ``export``; default: the one the search recorded, if any).

    Returns:
        An :class:`ExportResult`; ``summary.json`` gains the ``export`` key. An INT8 model refused for its
        accuracy is reported in ``result.int8`` (``accepted`` false, ``reason``), not raised.

    Raises:
        ConfigError: A bad ``quantize``, ``calibration_images`` or ``int8_tolerance``, or ``quantize`` without onnx.
        RunDirError: No completed candidate, or its weights are missing.
        MednasError: ONNX tools missing (with the install command), an exported format differing from PyTorch by
            more than 1e-4, or a failed check; nothing is written then.

    Example:
        >>> result = export_bundle("runs/demo-xray-nodule")  # doctest: +SKIP
        >>> result.conversions["onnx"]["max_abs_diff"] < 1e-4  # doctest: +SKIP
        True
    """
    t0 = time.perf_counter()
    fmts = parse_formats(formats)
    int8_options = _check_options(fmts, quantize, calibration_images, int8_tolerance, ensemble)
    schema_path = find_schema(schema)
    license_text = _license_text(license_file)
    key, key_where = _signing_key(sign_key)
    rd = RunDir(run_dir)
    tracker = open_run_tracker(rd.root, mlflow)  # a missing mlflow package is reported before any work
    src = ensemble_source(rd.root) if ensemble else resolve_source(rd.root)
    dest = Path(out) if out is not None else rd.bundle
    tmp = _temporary_beside(dest)
    try:
        meta, conversions, checks = _build(tmp, rd, src, fmts, schema_path, license_text, int8_options)
        digest = bundle_digest(tmp)
        if key is not None:
            sign_bundle(tmp, key, where=key_where)
        files = sorted(q.relative_to(tmp).as_posix() for q in tmp.rglob("*") if q.is_file())
        _replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    int8 = meta["mednas"].get("int8")
    _update_summary(rd, dest, src, conversions, checks, seconds, digest, int8)
    _track_export(tracker, dest, src, conversions, digest, seconds, quantize)
    logger.info(
        "exported trial %d (%s) to %s in %.1fs; bundle digest %s", src.trial, src.label, dest, seconds, digest
    )
    return ExportResult(
        dest, src.kind, src.trial, conversions, checks, meta, seconds, files, digest, key is not None, int8
    )


def _track_export(
    tracker: Tracker,
    dest: Path,
    src: ExportSource,
    conversions: dict[str, dict[str, Any]],
    digest: str,
    seconds: float,
    quantize: str | None,
) -> None:
    """Log the bundle folder to MLflow as the artifact of a run named ``export`` (when the run is tracked)."""
    info = {
        "trial": src.trial,
        "source": src.kind,
        "formats": sorted(conversions),
        "quantize": quantize,
        "digest": digest,
        "max_abs_diff": {k: v["max_abs_diff"] for k, v in conversions.items()},
        "seconds": seconds,
    }
    tracker.log_export(info, dest)


def _check_options(
    fmts: tuple[str, ...],
    quantize: str | None,
    calibration_images: int,
    int8_tolerance: float,
    ensemble: bool,
) -> Int8Options | None:
    """Check the export options before anything is read; return the INT8 options (None without ``quantize``).

    An ensemble's network is its TorchScript file, and it has no INT8 model: other combinations are refused.
    """
    int8_options = check_int8_options(quantize, fmts, calibration_images, int8_tolerance)
    if ensemble and "torchscript" not in fmts:
        raise ConfigError("--ensemble needs the torchscript format: the bundle's network is models/model.ts")
    if ensemble and int8_options is not None:
        raise ConfigError("--quantize cannot be combined with --ensemble (export the ensemble in float32)")
    if "onnx" in fmts:
        check_onnx_available()
    return int8_options


def _signing_key(sign_key: str | os.PathLike[str] | None) -> tuple[Any, str]:
    """The key file to sign with (``--sign-key``, else ``$MEDNAS_BUNDLE_KEY``, else None) and where it came from."""
    key = sign_key if sign_key is not None else (os.environ.get(KEY_ENV) or None)
    key_where = "--sign-key" if sign_key is not None else f"${KEY_ENV}"
    if key is not None and not Path(key).is_file():
        raise MednasError(f"{key}: signing key file not found ({key_where})")
    return key, key_where


def _temporary_beside(dest: Path) -> Path:
    """Check the destination and make the temporary folder the bundle is built in, beside it."""
    _check_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))


def _license_text(license_file: str | os.PathLike[str] | None) -> str:
    if license_file is None:
        return (
            "Terms of use of this model\n\n"
            "The weights in models/ were trained by the team that ran this mednas search, on data whose owners set\n"
            "the terms under which a model trained on it may be shared and used. No licence has been chosen here:\n"
            "until the team replaces this file with one (mednas export --license FILE), all rights are reserved.\n\n"
            "The configuration files were generated by mednas (Apache-2.0) and describe stock MONAI components\n"
            "(Apache-2.0). This model is for research and validation only; it is not a medical device.\n"
        )
    path = Path(license_file)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MednasError(f"{path}: cannot read the licence file: {exc.strerror or exc}") from exc


def _is_bundle(path: Path) -> bool:
    from mednas.io import read_json

    try:
        return "mednas" in read_json(path / "configs" / "metadata.json")
    except (OSError, ValueError, TypeError):
        return False


def _check_destination(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise MednasError(f"{dest}: exists and is not a folder; choose another --out")
    if dest.is_dir() and any(dest.iterdir()) and not _is_bundle(dest):
        raise MednasError(
            f"{dest}: folder exists and is not a mednas bundle; choose another --out or empty it"
        )


def _replace(tmp: Path, dest: Path) -> None:
    """Rename the finished bundle into place; an older bundle there is swapped out, then removed."""
    old: Path | None = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
        old.rmdir()
        os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except OSError:
        if old is not None:
            os.rename(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------------- build


def _build(
    root: Path,
    rd: RunDir,
    src: ExportSource,
    fmts: tuple[str, ...],
    schema: Path | None,
    license_text: str,
    int8_options: Int8Options | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]:
    """Write every file of the bundle into ``root`` and check it; return its metadata, conversions and checks."""
    import torch

    from mednas.bundle._convert import sample_inputs
    from mednas.bundle._hashes import DATA_HASHES, write_data_hashes
    from mednas.bundle._model_card import model_card
    from mednas.bundle._record import search_record
    from mednas.io import write_json, write_text

    (root / "configs").mkdir()
    (root / "models").mkdir()
    (root / "docs").mkdir()
    is_ensemble = isinstance(src, EnsembleSource)
    model = load_ensemble(src, _load_model) if is_ensemble else _load_model(src)
    torch.save(
        {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        root / "models" / "model.pt",
    )
    pipeline = src.pipeline
    inputs = sample_inputs(pipeline.in_channels, pipeline.window, pipeline.normalize)
    if not all_finite(eager_outputs(model, inputs)):
        raise RunDirError(
            f"{src.weights}: the network gives NaN or infinite outputs on the export's test inputs "
            "(corrupt or diverged weights); nothing was written"
        )
    conv_records = _convert(root, model, inputs, fmts)
    config = inference_config(src.spec.to_dict(), pipeline)
    if is_ensemble:
        config["network_def"] = ensemble_network_def()
    write_json(root / "configs" / "inference.json", config)
    agreement = _pipeline_check(root, model, pipeline)
    params = int(sum(p.numel() for p in model.parameters()))
    meta = _metadata(rd, src, pipeline, conv_records, params, agreement)
    if is_ensemble:
        ensemble_metadata(meta, src)
    if int8_options is not None:
        meta["mednas"]["int8"] = build_int8(root, rd, src, int8_options)
    write_json(root / "configs" / "metadata.json", meta)
    write_text(root / "docs" / "README.md", model_card(meta))
    exported = {"trial": src.trial, "source": src.kind}
    if is_ensemble:
        exported["ensemble"] = len(src.members)
    write_json(root / "search_record.json", search_record(rd, src.summary, exported))
    write_text(root / "LICENSE", license_text)
    # Content hashes of training/validation images (hashes only) for `mednas evaluate`'s overlap check.
    write_data_hashes(root / DATA_HASHES, rd, src.task)
    write_checksums(root)
    int8_kept = bool((meta["mednas"].get("int8") or {}).get("accepted"))
    return meta, conv_records, _verify(root, schema, agreement, int8_kept)


def _load_model(src: ExportSource) -> Any:
    """Build the candidate's network and load its weights, refusing anything but a plain state dict of tensors.

    Raises:
        RunDirError: If the weights are not a plain state dict or do not fit the network.
    """
    import torch

    from mednas.spec import build

    model = build(src.spec)
    try:
        # weights_only=True: a pickle with code in it is refused, never run; the message gives no advice to disable it.
        state = torch.load(src.weights, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, zip errors...
        raise RunDirError(
            f"{src.weights}: not a plain state dict of tensors (torch.load with weights_only=True refused it)"
        ) from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RunDirError(
            f"{src.weights}: weights do not load into {src.spec.class_name}: {' '.join(str(exc).split())[:200]}"
        ) from None
    model.eval()
    return model


def _convert(root: Path, model: Any, inputs: Any, fmts: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Write the TorchScript and ONNX models asked for; each must match eager PyTorch within the tolerance.

    Raises:
        MednasError: If a format gives non-finite outputs, outputs of another shape, or differs by more than
            :data:`TOLERANCE`.
    """
    conversions: dict[str, Conversion] = {}
    if "torchscript" in fmts:
        conversions["torchscript"] = export_torchscript(model, inputs, root / "models" / "model.ts")
    if "onnx" in fmts:
        conversions["onnx"] = export_onnx(model, inputs, root / "models" / "model.onnx")
    for fmt, conv in conversions.items():
        logger.info(
            "%s (%s): max |difference| from eager PyTorch %.3g over %d inputs (%.1fs)",
            fmt,
            conv.method,
            conv.max_abs_diff,
            conv.n_inputs,
            conv.seconds,
        )
        if not np.isfinite(conv.max_abs_diff) or conv.max_abs_diff > TOLERANCE:
            how = (
                "gives NaN or infinite outputs, or outputs of another shape, where eager PyTorch does not"
                if not np.isfinite(conv.max_abs_diff)
                else f"differs from eager PyTorch by {conv.max_abs_diff:.3g}"
            )
            raise MednasError(f"{fmt} export {how} (tolerance {TOLERANCE:g} in float32); nothing was written")
    return {k: v.to_dict() for k, v in conversions.items()}


def _verify(
    root: Path, schema: Path | None, agreement: dict[str, Any], int8_kept: bool = False
) -> dict[str, Any]:
    """MONAI's metadata and network checks and the checksums over the finished bundle; what passed."""
    checks: dict[str, Any] = {"pipeline_agreement": agreement}
    checks["metadata"] = check_metadata(root / "configs" / "metadata.json", schema)
    verify_net_in_out(root)
    checks["net_in_out"] = "monai.bundle.verify_net_in_out passed"
    required = ("configs/metadata.json", "configs/inference.json", "models/model.pt")
    verify_checksums(root, required=(*required, INT8_FILE) if int8_kept else required)
    checks["checksums"] = "checksums.sha256 verified"
    return checks


def inference_config(spec: dict[str, Any], pipeline: Pipeline) -> dict[str, Any]:
    """Return ``configs/inference.json``: stock MONAI components only, instantiable without mednas.

    ``python -m monai.bundle run --config_file configs/inference.json --bundle_root BUNDLE --input_dir DIR`` runs
    it over every file and folder in ``DIR`` (the evaluator needs pytorch-ignite); ``network_def``,
    ``preprocessing``, ``inferer`` and ``postprocessing`` can also be used alone with ``ConfigParser``.
    """
    pre = [config_entry(n, kw) for n, kw in pipeline.preprocessing(loader=True)]
    post = [
        config_entry(n, kw) for n, kw in pipeline.postprocessing("@preprocessing", save_dir="@output_dir")
    ]
    inferer_name, inferer_kwargs = pipeline.inferer()
    handlers: list[dict[str, Any]] = [
        {
            "_target_": "CheckpointLoader",
            "load_path": "@ckpt_path",
            "load_dict": {"model": "@network"},
            "map_location": "cpu",
        },
        {"_target_": "StatsHandler", "iteration_log": False},
    ]
    if pipeline.problem == "classification":
        keys = "['pred', 'finding_score'" + (", 'decision']" if pipeline.threshold is not None else "]")
        handlers.append(
            {
                "_target_": "ClassificationSaver",
                "output_dir": "@output_dir",
                "filename": "predictions.csv",
                "batch_transform": "$lambda x: [d['image'].meta for d in x]",
                "output_transform": f"$lambda x: [torch.cat([d[k].reshape(-1).float() for k in {keys}]) for d in x]",
            }
        )
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "input_dir": "$@bundle_root + '/input'",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": "$[{'image': f} for f in sorted(glob.glob(os.path.join(@input_dir, '*')))]",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": config_entry(spec["target"], spec["kwargs"]),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": pre},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": config_entry(inferer_name, inferer_kwargs),
        "postprocessing": {"_target_": "Compose", "transforms": post},
        "handlers": handlers,
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": False,
        },
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
    }


def _synthetic_input(folder: Path, pipeline: Pipeline) -> Path:
    """Write a synthetic image (noise with a bright blob, off the training shape) to exercise the pipeline."""
    from mednas.io import MedImage, write_nifti

    rng = np.random.default_rng(0)
    shape = tuple(max(8, int(round(s * 1.25)) + 1) for s in pipeline.shape)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    blob = (np.sum([g**2 for g in grids], axis=0) < 0.2).astype(np.float32)
    image = (rng.normal(100, 20, size=(pipeline.in_channels, *shape)) + 150 * blob).clip(0, 65535)
    if pipeline.spatial_dims == 2:
        from skimage import io as skio

        path = folder / "synthetic.png"
        skio.imsave(path, np.ascontiguousarray(image[0].T.astype(np.uint16)), check_contrast=False)
        return path
    affine = np.diag([1.5, -1.2, 2.0, 1.0])  # not RAS: the reorientation and its inverse take part
    return write_nifti(MedImage(image.astype(np.float32), affine), folder / "synthetic.nii.gz")


def _pipeline_check(root: Path, model: Any, pipeline: Pipeline) -> dict[str, Any]:
    """Run one synthetic image through mednas's predictor and through the bundle's inference.json; compare.

    Raises:
        MednasError: If the two disagree (beyond float32 rounding).
    """
    import torch
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    from mednas.bundle._predict import BundleModel
    from mednas.bundle._verify import quiet_monai
    from mednas.io import read_image

    if pipeline.spatial_dims == 2 and pipeline.in_channels != 1:
        return {"skipped": "multi-channel 2D images have no common file format for both readers"}
    with tempfile.TemporaryDirectory(prefix="mednas-export-check-") as scratch:
        path = _synthetic_input(Path(scratch), pipeline)
        meta = {"mednas": {"pipeline": pipeline.to_dict(), "source": "check"}}
        ours = BundleModel(root, meta, model, "torch").run(read_image(path))
        with quiet_monai():
            parser = ConfigParser()
            parser.read_config(str(root / "configs" / "inference.json"))
            parser["bundle_root"] = str(root)
            parser["output_dir"] = scratch
            pre = parser.get_parsed_content("preprocessing")
            inferer = parser.get_parsed_content("inferer")
            post = [
                t
                for t in parser.get_parsed_content("postprocessing").transforms
                if type(t).__name__ != "SaveImaged"
            ]
            data = pre({"image": str(path)})
            with torch.no_grad():
                data["pred"] = inferer(data["image"][None], model)[0]
            theirs = Compose(post)(data)
    a, b = np.asarray(ours["pred"], dtype=np.float64), np.asarray(theirs["pred"], dtype=np.float64)
    if a.shape != b.shape:
        raise MednasError(
            f"bundle check: mednas predict gives shape {a.shape}, the bundle's inference.json {b.shape}"
        )
    result: dict[str, Any] = {
        "input": f"synthetic {'x'.join(map(str, a.shape[1:])) or 'image'}",
        "max_abs_diff": float(np.abs(a - b).max()) if a.size else 0.0,
    }
    if pipeline.problem == "segmentation":
        result["voxel_agreement"] = float((a == b).mean())
        ok = result["voxel_agreement"] >= 0.999
    else:
        ok = result["max_abs_diff"] <= TOLERANCE
    if not ok:
        raise MednasError(
            f"bundle check: mednas predict and the bundle's inference.json disagree ({result}); nothing written"
        )
    return result


# ----------------------------------------------------------------------------------------------- metadata


def _versions() -> dict[str, str | None]:
    from mednas._versions import package_versions

    return package_versions(
        ("mednas", "monai", "torch", "numpy", "onnx", "onnxruntime", "onnxscript", "nibabel", "pydicom")
    )


def _required_packages() -> dict[str, str]:
    """The image readers' distributions that are installed, with their versions (MONAI's ``required_packages_version``)."""
    from mednas._versions import package_versions

    return {dist: v for dist, v in package_versions(_READER_PACKAGES).items() if v is not None}


def _metrics_clean(metrics: dict[str, Any]) -> dict[str, Any]:
    keep = ("value", "ci95", "n_resamples")
    return {name: {k: m[k] for k in keep if k in m} for name, m in metrics.items() if isinstance(m, dict)}


def _limitations(
    src: ExportSource, pipeline: Pipeline, data: dict[str, Any], fid: dict[str, Any] | None
) -> list[str]:
    shape = "x".join(map(str, pipeline.shape))
    out: list[str] = []
    if src.is_proxy:
        # A ladder trial stopped below the top rung trained for the epochs of the rungs it completed.
        epochs = sum(int(r.get("epochs") or 0) for r in src.record.get("rungs") or []) or src.summary.get(
            "proxy", {}
        ).get("epochs")
        out.append(
            f"PROXY CANDIDATE, NOT RETRAINED: weights from a {epochs}-epoch proxy "
            f"training at {shape}; never trained at full fidelity, never evaluated on the held-out test split."
        )
    elif src.is_ladder:
        out.append(f"{LADDER_FLAG.upper()}: {LADDER_NOTE}.")
    if data.get("simulated"):
        out.append(
            "SIMULATED data: trained and evaluated on simulated images; no evidence of performance on patients."
        )
    if data.get("augmentation"):
        out.append(
            "AUGMENTED COPIES of cases were part of the data; metrics are optimistic for independent data."
        )
    if src.record.get("learned") is False:
        out.append("This candidate was flagged as never having started to learn during training.")
    test = src.metrics.get("test")
    n_test = (src.record.get("test") or {}).get("n_cases")
    if test and n_test is not None and n_test < 100:
        out.append(
            f"The held-out test split has {n_test} cases: intervals are wide, and one split of one dataset is "
            "not external validation."
        )
    elif not test:
        out.append(
            "No held-out test evaluation: the figures are validation figures, used to choose this candidate "
            "and its operating point, and therefore optimistic."
        )
    counts = src.resize_counts
    if counts.get("area") and counts.get("linear"):
        out.append(
            f"Training resized {counts['area']} cases by area averaging and {counts['linear']} by linear "
            f"interpolation (cases smaller than {shape} on some axis); the bundle uses {pipeline.resize_mode} "
            "for every input."
        )
    spacing = data.get("median_spacing")
    out.append(
        f"Every input is resized to {shape} whatever its voxel spacing or field of view"
        + (f" (training median spacing {', '.join(f'{s:g}' for s in spacing)} mm)" if spacing else "")
        + "; images unlike the training data in modality, field of view or resolution are outside its validated use."
    )
    if pipeline.spatial_dims == 2 and pipeline.in_channels == 1:
        out.append("Colour (RGB) images are turned grey by averaging their colour channels, as in training.")
    out.append(
        "MONAI's LoadImaged (configs/inference.json) and mednas's readers (mednas predict) read NIfTI, NRRD and "
        "PNG identically; for DICOM, mednas orders slices along the normal and applies rescale, MONOCHROME1 "
        "inversion and radiography VOI LUTs, which MONAI's readers may do differently: check DICOM inputs "
        "through the path you will validate."
    )
    if fid and fid.get("warning"):
        out.append(f"Proxy fidelity: {fid['warning']}")
    out.append("Not a medical device; for research and validation only.")
    return out


def _metadata(
    rd: RunDir,
    src: ExportSource,
    pipeline: Pipeline,
    conversions: dict[str, dict[str, Any]],
    params: int,
    agreement: dict[str, Any],
) -> dict[str, Any]:
    import monai
    import torch

    s = src.summary
    task = src.task
    data = _data_brief(rd, s)
    names = list(pipeline.class_names)
    metrics = {split: _metrics_clean(m) for split, m in src.metrics.items()}
    eval_metrics = {
        f"{split}_{name}": m["value"]
        for split, ms in metrics.items()
        for name, m in ms.items()
        if isinstance(m.get("value"), (int, float))
    }
    modality = data.get("modality") or "unknown"
    how = {
        "retrained": "retrained at full fidelity",
        "ladder": f"{LADDER_NOTE} ({LADDER_FLAG.upper()})",
        "proxy": f"proxy weights, not retrained ({PROXY_FLAG.upper()})",
    }[src.kind]
    description = (
        f"{src.spec.class_name} ({params:,} parameters) found by mednas neural architecture search for task "
        f"'{task.name}' ({pipeline.problem}, {pipeline.spatial_dims}D); trial {src.trial}, {how}."
        + (" Trained on SIMULATED data." if data["simulated"] else "")
    )
    caveat = {
        "retrained": "",
        "ladder": f" {LADDER_FLAG.upper()}: {LADDER_NOTE}.",
        "proxy": f" {PROXY_FLAG.upper()}.",
    }
    return {
        "schema": SCHEMA_URL,
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported by mednas from trial {src.trial} ({src.label})"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": _required_packages(),
        "task": task.description or f"{task.name}: {pipeline.problem}",
        "description": description,
        "authors": "The team that ran this mednas search (exported by mednas)",
        "copyright": "The team that trained this model; see LICENSE",
        "data_source": f"Task '{task.name}': {data['n_cases']} cases (fingerprint {data['fingerprint_hash']})"
        + (", SIMULATED data" if data["simulated"] else ""),
        "data_type": "dicom, nibabel, nrrd, png/jpeg",
        "image_classes": f"{pipeline.in_channels}-channel {modality} image, normalised ({pipeline.normalize}) and resized to "
        f"{'x'.join(map(str, pipeline.shape))}",
        "label_classes": ", ".join(f"{i}: {n}" for i, n in enumerate(names)),
        "pred_classes": ", ".join(f"{i}: {n}" for i, n in enumerate(names)),
        "eval_metrics": eval_metrics,
        "intended_use": (
            f"Research and validation of: {task.description or task.name}. Not a medical device; not for "
            "diagnosis or treatment decisions." + caveat[src.kind]
        ),
        "references": [],
        "network_data_format": _network_data_format(pipeline, modality),
        "mednas": _mednas_section(src, pipeline, conversions, params, agreement, data, metrics),
    }


def _data_brief(rd: RunDir, s: dict[str, Any]) -> dict[str, Any]:
    """The data the model was trained on, from ``summary.json`` and the fingerprint: counts, hashes, geometry."""
    fp = rd.read_json(rd.fingerprint) if rd.fingerprint.exists() else {}
    fps = fp.get("summary") or {}
    data_rec = s.get("data") or {}
    return {
        "n_cases": data_rec.get("n_cases"),
        "splits": data_rec.get("splits"),
        "fingerprint_hash": data_rec.get("fingerprint_hash") or fp.get("hash"),
        "split_hash": data_rec.get("split_hash"),
        "simulated": bool(s.get("simulated_data")),
        "augmentation": data_rec.get("augmentation"),
        "modality": fps.get("modality"),
        "median_shape": fps.get("median_shape"),
        "median_spacing": fps.get("median_spacing"),
    }


def _network_data_format(pipeline: Pipeline, modality: str) -> dict[str, Any]:
    """MONAI bundle ``network_data_format``: the input image, the raw outputs and the post-processed outputs."""
    names = list(pipeline.class_names)
    value_range = [0.0, 1.0] if pipeline.normalize in ("percentile", "ct") else []
    fmt_in = "hounsfield" if pipeline.normalize == "ct" else "magnitude"
    if pipeline.problem == "classification":
        out_fmt = {
            "type": "logits",
            "format": "classes",
            "num_channels": len(names),
            "spatial_shape": [],
            "dtype": "float32",
            "value_range": [],
            "is_patch_data": False,
            "channel_def": {str(i): n for i, n in enumerate(names)},
        }
        post_fmt = {
            "pred": {**out_fmt, "type": "probabilities", "value_range": [0, 1]},
            "finding_score": {
                "type": "probabilities",
                "format": "finding score",
                "num_channels": 1,
                "spatial_shape": [],
                "dtype": "float32",
                "value_range": [0, 1],
            },
        }
        if pipeline.threshold is not None:
            post_fmt["decision"] = {
                "type": "probabilities",
                "format": f"finding score >= {pipeline.threshold:.6g}",
                "num_channels": 1,
                "spatial_shape": [],
                "dtype": "float32",
                "value_range": [0, 1],
            }
    else:
        out_fmt = {
            "type": "image",
            "format": "logits",
            "num_channels": len(names),
            "spatial_shape": list(pipeline.window),
            "dtype": "float32",
            "value_range": [],
            "is_patch_data": pipeline.patch is not None,
            "channel_def": {str(i): n for i, n in enumerate(names)},
        }
        post_fmt = {
            "pred": {
                "type": "image",
                "format": "labels",
                "num_channels": 1,
                "spatial_shape": ["*"] * pipeline.spatial_dims,
                "dtype": "uint8",
                "value_range": [0, len(names) - 1],
                "channel_def": {str(i): n for i, n in enumerate(names)},
            }
        }
    return {
        "inputs": {
            "image": {
                "type": "image",
                "format": fmt_in,
                "modality": modality,
                "num_channels": pipeline.in_channels,
                "spatial_shape": list(pipeline.window),
                "dtype": "float32",
                "value_range": value_range,
                "is_patch_data": pipeline.patch is not None,
                "channel_def": {"0": "image"},
            }
        },
        "outputs": {"pred": out_fmt},
        "post_processed_outputs": post_fmt,
    }


def _mednas_section(
    src: ExportSource,
    pipeline: Pipeline,
    conversions: dict[str, dict[str, Any]],
    params: int,
    agreement: dict[str, Any],
    data: dict[str, Any],
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """The bundle metadata's ``mednas`` section: spec, task, pipeline, metrics, provenance and limitations."""
    s = src.summary
    task = src.task
    names = list(pipeline.class_names)
    calibration = {
        split: {k: m[k] for k in ("brier", "ece") if k in m}
        for split, m in metrics.items()
        if pipeline.problem == "classification" and any(k in m for k in ("brier", "ece"))
    }
    op = src.operating_point if pipeline.problem == "classification" else None
    if op is not None:
        op = {
            **{k: v for k, v in op.items() if k != "reason"},
            "chosen_on": "validation",
            "applies_to": "finding score = summed probability of the finding classes; finding when score >= threshold",
        }
    fid = s.get("proxy_fidelity")
    return {
        "format_version": 1,
        "source": src.kind,
        "source_label": src.label,
        "trial": src.trial,
        "params": params,
        "spec": src.spec.to_dict(),
        "task": {
            "name": task.name,
            "problem": pipeline.problem,
            "spatial_dims": pipeline.spatial_dims,
            "labels": names,
            "findings": [names[i] for i in pipeline.finding_indices],
            "objective": s.get("objective"),
            "objective_terms": [t.model_dump(mode="json", exclude_none=True) for t in task.objective.terms],
        },
        "pipeline": pipeline.to_dict(),
        "operating_point": op,
        "calibration": calibration,
        # Temperature scaling fitted on validation (pipeline.temperature applies it), with ECE before/after
        # and the operating point's warnings; None when nothing could be fitted.
        "temperature_scaling": src.calibration if pipeline.problem == "classification" else None,
        "metrics": metrics,
        "metrics_note": {
            "proxy": "validation metrics of the proxy training (proxy resolution); no test evaluation",
            "ladder": "validation metrics at the top rung of the resolution ladder (full resolution, one seed); "
            "no test evaluation",
            "retrained": "validation after retraining; test evaluated once at the validation operating point",
        }[src.kind]
        if not (src.kind == "retrained" and src.record.get("from_ladder"))
        else "validation of the resolution ladder's top-rung weights (full resolution; retrain evaluated them, it "
        "did not train them again); test evaluated once at the validation operating point",
        "test_cases": (src.record.get("test") or {}).get("n_cases"),
        "proxy_fidelity": fid,
        "data": data,
        "search": {
            "n_trials": s.get("n_trials"),
            "families": s.get("families"),
            "proxy": s.get("proxy"),
            "fidelity": s.get("fidelity", "flat"),
            "ladder": s.get("ladder"),
            "compute": s.get("compute"),
            "config_hash": (s.get("study") or {}).get("config_hash"),
            "retrain": _retrain_brief(s),
        },
        "exports": conversions,
        "tolerance": TOLERANCE,
        "pipeline_check": agreement,
        "resize_counts": src.resize_counts,
        "limitations": _limitations(src, pipeline, data, fid),
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _retrain_brief(summary: dict[str, Any]) -> dict[str, Any] | None:
    r = summary.get("retrain")
    if not r:
        return None
    return {k: r.get(k) for k in ("top_k", "candidates", "best", "shape", "patch", "max_epochs", "patience")}


def _update_summary(
    rd: RunDir,
    dest: Path,
    src: ExportSource,
    conversions: dict[str, dict[str, Any]],
    checks: dict[str, Any],
    seconds: float,
    digest: str,
    int8: dict[str, Any] | None = None,
) -> None:
    """Record the export in the run's summary (its ``export`` key), when the run has a summary."""
    if not rd.summary_path.exists():
        return
    rd.update_summary(
        export={
            "path": rd.rel(dest),
            "source": src.kind,
            "source_label": src.label,
            "trial": src.trial,
            "formats": sorted(conversions),
            "max_abs_diff": {k: v["max_abs_diff"] for k, v in conversions.items()},
            "metadata_check": checks.get("metadata"),
            "digest": digest,
            "ensemble": len(src.members) if isinstance(src, EnsembleSource) else None,
            "int8": None
            if int8 is None
            else {k: int8.get(k) for k in ("file", "accepted", "objective_drop", "tolerance", "reason")},
            "seconds": round(seconds, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
