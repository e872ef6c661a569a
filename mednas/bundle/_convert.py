"""TorchScript and ONNX versions of a network, each checked against eager PyTorch before it is kept.

The comparison runs several float32 inputs of the network's input shape through eager PyTorch, the TorchScript
module and ONNX Runtime, and records the largest absolute difference of the raw outputs; above
:data:`TOLERANCE` the export fails.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mednas.runtime import INSTALL_HINT, check_onnx_available, ort_session, quiet_exporters, write_onnx

logger = logging.getLogger(__name__)

__all__ = [
    "FORMATS",
    "INSTALL_HINT",
    "TOLERANCE",
    "Conversion",
    "all_finite",
    "check_onnx_available",
    "compare_outputs",
    "export_onnx",
    "export_torchscript",
    "sample_inputs",
]

#: Largest absolute difference from eager PyTorch (float32) an exported format may show.
TOLERANCE = 1e-4
FORMATS = ("torchscript", "onnx")
_N_INPUTS = 3


@dataclass
class Conversion:
    """One exported format and how it compared with eager PyTorch.

    Args:
        format: ``"torchscript"`` or ``"onnx"``.
        file: Path inside the bundle.
        method: ``script``/``trace`` (TorchScript), ``dynamo``/``torchscript`` exporter (ONNX).
        max_abs_diff: Largest absolute difference of the raw outputs over all inputs.
        n_inputs: Inputs compared.
        seconds: Time to convert and compare.
        details: Extra facts (ONNX opset, batch axis).
    """

    format: str
    file: str
    method: str
    max_abs_diff: float
    n_inputs: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form recorded in the metadata."""
        return {
            "file": self.file,
            "method": self.method,
            "max_abs_diff": float(self.max_abs_diff),
            "n_inputs": self.n_inputs,
            "tolerance": TOLERANCE,
            "seconds": round(self.seconds, 3),
            "inputs": "synthetic float32 batches of 2 (noise, smooth field, sparse) in the normalised intensity range",
            **self.details,
        }


def sample_inputs(
    in_channels: int, window: Sequence[int], normalize: str = "zscore", *, seed: int = 0
) -> list[Any]:
    """Return :data:`_N_INPUTS` float32 test batches ``(2, C, *window)`` in the range the preprocessing produces.

    Noise, a smooth random field, and a sparse image, each in ``[0, 1]`` after ``percentile`` or ``ct``
    normalisation and standard normal after ``zscore`` (or none). The inputs are synthetic on purpose: the check is
    about arithmetic, and no patient data enters the bundle. They stay in the normalised range because float32
    rounding grows with the output's magnitude: far-out-of-range inputs drive logits into the hundreds, where one
    unit in the last place is already ~1e-4.
    """
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    shape = (2, int(in_channels), *[int(s) for s in window])
    unit = normalize in ("percentile", "ct")
    noise = torch.rand(shape, generator=g) if unit else torch.randn(shape, generator=g)
    coarse = torch.randn((2, int(in_channels), *[max(2, int(s) // 8) for s in window]), generator=g)
    mode = "bilinear" if len(window) == 2 else "trilinear"
    smooth = F.interpolate(coarse, size=tuple(int(s) for s in window), mode=mode, align_corners=False)
    if unit:
        smooth = (smooth - smooth.amin()) / (smooth.amax() - smooth.amin() + 1e-6)
    mask = torch.rand(shape, generator=g) > 0.7
    sparse = (torch.rand(shape, generator=g) if unit else torch.randn(shape, generator=g)) * mask
    return [noise, smooth, sparse][:_N_INPUTS]


def compare_outputs(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Return the largest absolute difference between matching outputs.

    ``inf`` on a shape mismatch, a different number of outputs, or any NaN or infinite value on either side: a
    non-finite output is a failed check, never a difference of 0.
    """
    if len(reference) != len(outputs):
        return float("inf")
    worst = 0.0
    for a, b in zip(reference, outputs):
        if a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
            return float("inf")
        worst = max(
            worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
        )
    return worst


def all_finite(outputs: Sequence[np.ndarray]) -> bool:
    """True when every value of every output is finite."""
    return all(bool(np.isfinite(o).all()) for o in outputs)


def _magnitude(outputs: Sequence[np.ndarray]) -> float:
    return float(max((np.abs(o).max() for o in outputs if o.size), default=0.0))


def eager_outputs(model: Any, inputs: Sequence[Any]) -> list[np.ndarray]:
    """The network's eager PyTorch outputs on the test inputs (what exported formats are compared against)."""
    return _eager(model, inputs)


def _eager(model: Any, inputs: Sequence[Any]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        return [model(x).detach().float().numpy() for x in inputs]


def export_torchscript(model: Any, inputs: Sequence[Any], path: Path) -> Conversion:
    """Script the network (trace it where scripting fails), save it, and compare it with eager PyTorch.

    Args:
        model: The network in eval mode, on CPU.
        inputs: Test batches from :func:`sample_inputs` (the first also serves for tracing).
        path: Destination (``models/model.ts``).
    """
    import torch

    example = inputs[0]
    t0 = time.perf_counter()
    with quiet_exporters():
        try:
            module = torch.jit.script(model)
            method = "script"
        except Exception as exc:  # noqa: BLE001 - many MONAI blocks are traceable but not scriptable
            logger.debug(
                "torch.jit.script failed (%s); tracing instead", str(exc).splitlines()[0] if str(exc) else exc
            )
            with torch.no_grad():
                module = torch.jit.trace(model, example, check_trace=False)
            method = "trace"
        torch.jit.save(module.eval(), str(path))
        loaded = torch.jit.load(str(path), map_location="cpu")
    reference = _eager(model, inputs)
    diff = compare_outputs(reference, _eager(loaded, inputs))
    return Conversion(
        "torchscript",
        "models/model.ts",
        method,
        diff,
        len(inputs),
        time.perf_counter() - t0,
        {"output_max_abs": _magnitude(reference)},
    )


def export_onnx(model: Any, inputs: Sequence[Any], path: Path) -> Conversion:
    """Export the network to one ONNX file (weights inside) with a dynamic batch axis, and compare it in ONNX Runtime.

    Uses PyTorch's default (dynamo) exporter, which needs ``onnxscript``; without it, or where it fails, the
    TorchScript-based exporter.

    Args:
        model: The network in eval mode, on CPU.
        inputs: Test batches from :func:`sample_inputs` (the first also serves as the export example).
        path: Destination (``models/model.onnx``).
    """
    check_onnx_available()
    t0 = time.perf_counter()
    method = write_onnx(model, inputs[0], path)
    for extra in path.parent.glob(path.name + ".data"):
        extra.unlink()  # weights are inside the file; a stray external-data file would not be checksummed
    import onnx

    model_proto = onnx.load(str(path))
    onnx.checker.check_model(model_proto)
    opset = max((o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")), default=None)
    session = ort_session(path)
    outputs = [session.run(None, {"image": x.numpy()})[0] for x in inputs]
    reference = _eager(model, inputs)
    diff = compare_outputs(reference, outputs)
    return Conversion(
        "onnx",
        "models/model.onnx",
        method,
        diff,
        len(inputs),
        time.perf_counter() - t0,
        {
            "opset": opset,
            "input": "image",
            "output": "pred",
            "dynamic_axes": {"image": [0], "pred": [0]},
            "output_max_abs": _magnitude(reference),
        },
    )


def onnx_session(path: str | os.PathLike[str]) -> Any:
    """An ONNX Runtime CPU session using as many threads as torch does."""
    return ort_session(path)
