"""Export a run's best candidate as a verified MONAI bundle, and run bundles on new images.

``export_bundle(run_dir)`` writes ``RUN_DIR/bundle`` (network as a stock MONAI class, the preprocessing training
used, TorchScript and ONNX checked against PyTorch, metadata, model card, search record, checksums);
``load_bundle(bundle)`` verifies and loads one, and the model it returns predicts from image paths.

Names load on first use, so ``import mednas`` stays quick. The package is callable: ``mednas.export(run_dir)``
is :func:`mednas.api.export`.

Example:
    >>> from mednas.export import export_bundle, load_bundle
    >>> export_bundle("runs/demo-mri-lesion")  # doctest: +SKIP
    >>> model = load_bundle("runs/demo-mri-lesion/bundle")  # doctest: +SKIP
    >>> model("scan.nii.gz").mask.array.shape  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mednas.export._bundle import (
        BUNDLE_VERSION,
        ExportResult,
        export_bundle,
        inference_config,
        parse_formats,
    )
    from mednas.export._convert import FORMATS, INSTALL_HINT, TOLERANCE, Conversion
    from mednas.export._pipeline import Pipeline
    from mednas.export._predict import (
        BACKENDS,
        BundleModel,
        Prediction,
        PredictionError,
        load_bundle,
        predict_to_dir,
    )
    from mednas.export._record import scrub_text, search_record
    from mednas.export._source import PROXY_FLAG, ExportSource, resolve_source
    from mednas.export._verify import (
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
    "_verify": ("CHECKSUMS", "KEY_ENV", "SCHEMA_ENV", "SIGNATURE", "BundleError", "bundle_digest", "sign_bundle",
                "verify_checksums", "verify_signature", "write_checksums"),
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
        raise AttributeError(f"module 'mednas.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mednas.export.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


from mednas._callable import make_callable  # noqa: E402

make_callable(__name__, "export")
