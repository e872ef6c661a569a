"""INT8 models through ONNX Runtime's static quantization (calibrated activations, per-channel weights)."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mednas.errors import MednasError
from mednas.runtime._onnx import check_onnx_available, quiet_exporters

__all__ = ["QuantizeInfo", "quantize_int8"]

#: How the INT8 model is made, as the bundle's metadata records it.
METHOD = (
    "onnxruntime static quantization: QDQ format, per-channel int8 weights, uint8 activations, "
    "MinMax calibration"
)


@dataclass(frozen=True)
class QuantizeInfo:
    """What :func:`quantize_int8` did.

    Attributes:
        method: The quantization scheme (:data:`METHOD`).
        n_calibration: Calibration images fed through the float model.
        seconds: Wall time of pre-processing, calibration and writing.
        float_bytes: Size of the float32 ONNX file.
        int8_bytes: Size of the INT8 ONNX file.
        preprocessed: Whether ONNX Runtime's pre-processing (shape inference, graph optimisation) ran first.
    """

    method: str
    n_calibration: int
    seconds: float
    float_bytes: int
    int8_bytes: int
    preprocessed: bool

    @property
    def size_ratio(self) -> float:
        """Float32 size over INT8 size (about 4 for convolution-heavy networks)."""
        return self.float_bytes / max(1, self.int8_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "size_ratio": round(self.size_ratio, 3)}


def quantize_int8(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    calibration: Iterable[np.ndarray],
    *,
    input_name: str = "image",
) -> QuantizeInfo:
    """Write an INT8 version of the float32 ONNX model ``src`` to ``dest``.

    Args:
        src: A float32 ONNX model (for example the bundle's ``models/model.onnx``).
        dest: Where the INT8 model goes.
        calibration: Float32 batches ``(N, C, *spatial)`` as the model receives them (preprocessed images: real
            training images for a shipped model; any input of the right shape when only speed is measured).
        input_name: The model's input name.

    Raises:
        MednasError: ONNX Runtime missing (with the install command), no calibration batch, or quantization failed.
    """
    check_onnx_available("INT8 quantization", "")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    src, dest = Path(src), Path(dest)
    batches = [np.ascontiguousarray(b, dtype=np.float32) for b in calibration]
    if not batches:
        raise MednasError("INT8 quantization needs at least one calibration image")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {input_name: x}

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mednas-int8-") as tmp:
        model_in, preprocessed = _preprocess(src, Path(tmp) / "pre.onnx")
        try:
            with quiet_exporters():
                quantize_static(
                    str(model_in),
                    str(dest),
                    _Reader(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    # MinMax calibration keeps two scalars per tensor and batch (ReduceMin/ReduceMax outputs), not
                    # the activations, so 64 3D volumes are cheap. CalibMaxIntermediateOutputs is NOT set: in
                    # onnxruntime 1.32 it clears the collected batches without computing their ranges first.
                    extra_options={"CalibTensorRangeSymmetric": False},
                )
        except Exception as exc:
            dest.unlink(missing_ok=True)
            raise MednasError(
                f"{src}: INT8 quantization failed: {(str(exc).splitlines() or [type(exc).__name__])[0][:200]}"
            ) from exc
    n = int(sum(b.shape[0] for b in batches))
    return QuantizeInfo(
        METHOD, n, time.perf_counter() - t0, src.stat().st_size, dest.stat().st_size, preprocessed
    )


def _preprocess(src: Path, out: Path) -> tuple[Path, bool]:
    """ONNX Runtime's recommended pre-processing (ONNX shape inference, optimisation); the original if it fails.

    ONNX Runtime's symbolic shape inference is skipped: it is meant for dynamic transformer shapes, and where it is
    incomplete it writes ``sym_shape_infer_temp.onnx`` and a ``<uuid>.data`` file into the working directory
    before raising (seen with MONAI's 3D U-Nets); ONNX's own shape inference serves convolutional networks.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with quiet_exporters():
            quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
        return out, True
    except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantizing the original still works
        return src, False
