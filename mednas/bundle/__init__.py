"""Export a run's best candidate as a verified MONAI bundle, and run bundles on new images.

``export_bundle(run_dir)`` writes ``RUN_DIR/bundle`` (network as a stock MONAI class, the preprocessing training
used, TorchScript and ONNX checked against PyTorch, metadata, model card, search record, checksums);
``load_bundle(bundle)`` verifies and loads one, and the model it returns predicts from image paths.

Names load on first use, so ``import mednas`` stays quick. The verb users call is the function
:func:`mednas.export` (in :mod:`mednas.api`); this package is the noun that holds its parts.

Example:
    >>> from mednas.bundle import export_bundle, load_bundle
    >>> export_bundle("runs/demo-mri-lesion")  # doctest: +SKIP
    >>> model = load_bundle("runs/demo-mri-lesion/bundle")  # doctest: +SKIP
    >>> model("scan.nii.gz").mask.array.shape  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mednas.bundle._bundle import (
        BUNDLE_VERSION,
        ExportResult,
        export_bundle,
        inference_config,
        parse_formats,
    )
    from mednas.bundle._convert import FORMATS, INSTALL_HINT, TOLERANCE, Conversion
    from mednas.bundle._pipeline import Pipeline
    from mednas.bundle._predict import (
        BACKENDS,
        BundleModel,
        Prediction,
        PredictionError,
        load_bundle,
        predict_to_dir,
    )
    from mednas.bundle._record import scrub_text, search_record
    from mednas.bundle._source import PROXY_FLAG, ExportSource, resolve_source
    from mednas.bundle._verify import (
        CHECKSUMS,
        KEY_ENV,
        SCHEMA_ENV,
        SIGNATURE,
        BundleError,
        bundle_digest,
        sign_bundle,
        verify_checksums,
        verify_signature,
        write_checksums,
    )

_WHERE = {
    "_bundle": ("BUNDLE_VERSION", "ExportResult", "export_bundle", "inference_config", "parse_formats"),
    "_convert": ("FORMATS", "INSTALL_HINT", "TOLERANCE", "Conversion"),
    "_pipeline": ("Pipeline",),
    "_predict": ("BACKENDS", "BundleModel", "Prediction", "PredictionError", "load_bundle", "predict_to_dir"),
    "_record": ("scrub_text", "search_record"),
    "_source": ("PROXY_FLAG", "ExportSource", "resolve_source"),
    "_verify": (
        "CHECKSUMS",
        "KEY_ENV",
        "SCHEMA_ENV",
        "SIGNATURE",
        "BundleError",
        "bundle_digest",
        "sign_bundle",
        "verify_checksums",
        "verify_signature",
        "write_checksums",
    ),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = [
    "BACKENDS",
    "BUNDLE_VERSION",
    "CHECKSUMS",
    "FORMATS",
    "INSTALL_HINT",
    "KEY_ENV",
    "PROXY_FLAG",
    "SCHEMA_ENV",
    "SIGNATURE",
    "TOLERANCE",
    "BundleError",
    "BundleModel",
    "Conversion",
    "ExportResult",
    "ExportSource",
    "Pipeline",
    "Prediction",
    "PredictionError",
    "bundle_digest",
    "export_bundle",
    "inference_config",
    "load_bundle",
    "parse_formats",
    "predict_to_dir",
    "resolve_source",
    "scrub_text",
    "search_record",
    "sign_bundle",
    "verify_checksums",
    "verify_signature",
    "write_checksums",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'mednas.bundle' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mednas.bundle.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
