"""The architecture of one candidate: a stock MONAI network class plus its constructor arguments.

An :class:`ArchSpec` is what a search space samples and what every later step (training, retraining,
export) rebuilds. It is frozen, round-trips through JSON, and has a stable hash, so a candidate can be
rebuilt anywhere MONAI is installed: ``import target; target(**kwargs)``.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ArchSpec", "build"]

_ALLOWED_PREFIXES = ("monai.networks.nets.",)


def _canonical(value: Any) -> Any:
    """Return ``value`` with tuples as lists and mapping keys as strings, as JSON would store it."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return float(value)
    # numpy scalars sneak in from samplers
    if hasattr(value, "item"):
        return _canonical(value.item())
    raise TypeError(f"ArchSpec kwargs must be JSON values, got {type(value).__name__}: {value!r}")


@dataclass(frozen=True)
class ArchSpec:
    """A network architecture: MONAI class path plus complete constructor keyword arguments.

    Args:
        target: Import path of a class in ``monai.networks.nets``, e.g. ``"monai.networks.nets.DynUNet"``.
        kwargs: Every constructor argument, as JSON values (lists, not tuples).
        family: The search-space family that sampled it (registry key), for reports.
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        out_channels: Output channels (classes).

    Example:
        >>> spec = ArchSpec("monai.networks.nets.BasicUNet", {"spatial_dims": 2, "in_channels": 1,
        ...                 "out_channels": 2, "features": [4, 4, 8, 16, 32, 4]}, "basicunet", 2, 1, 2)
        >>> ArchSpec.from_json(spec.to_json()) == spec
        True
    """

    target: str
    kwargs: Mapping[str, Any]
    family: str = ""
    spatial_dims: int = 2
    in_channels: int = 1
    out_channels: int = 2
    _hash: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.target.startswith(_ALLOWED_PREFIXES):
            raise ValueError(f"ArchSpec target must be a class in monai.networks.nets, got {self.target!r}")
        canonical = _canonical(dict(self.kwargs))
        object.__setattr__(self, "kwargs", canonical)
        payload = json.dumps({"target": self.target, "kwargs": canonical}, sort_keys=True, separators=(",", ":"))
        object.__setattr__(self, "_hash", hashlib.sha256(payload.encode()).hexdigest()[:16])

    def __hash__(self) -> int:
        return hash(self._hash)

    @property
    def hash(self) -> str:
        """A 16-hex-digit digest of target and kwargs, stable across processes and machines."""
        return self._hash

    @property
    def class_name(self) -> str:
        """The bare MONAI class name, e.g. ``"DynUNet"``."""
        return self.target.rsplit(".", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form (what ``trials/<n>/spec.json`` holds)."""
        return {
            "target": self.target,
            "kwargs": copy.deepcopy(dict(self.kwargs)),
            "family": self.family,
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "hash": self.hash,
        }

    def to_json(self) -> str:
        """Return the spec as a JSON string with sorted keys."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchSpec:
        """Rebuild a spec from :meth:`to_dict` output (the ``hash`` key, if present, is checked)."""
        spec = cls(
            target=data["target"],
            kwargs=data["kwargs"],
            family=data.get("family", ""),
            spatial_dims=int(data.get("spatial_dims", data["kwargs"].get("spatial_dims", 2))),
            in_channels=int(data.get("in_channels", 1)),
            out_channels=int(data.get("out_channels", 2)),
        )
        if "hash" in data and data["hash"] != spec.hash:
            raise ValueError(f"spec hash mismatch: file says {data['hash']}, contents give {spec.hash}")
        return spec

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        """Rebuild a spec from :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))

    def replace_kwargs(self, **changes: Any) -> ArchSpec:
        """Return a copy with some constructor arguments changed (e.g. ``image_size`` for full resolution)."""
        kwargs = copy.deepcopy(dict(self.kwargs))
        kwargs.update(changes)
        return ArchSpec(self.target, kwargs, self.family, self.spatial_dims, self.in_channels, self.out_channels)


def build(spec: ArchSpec) -> Any:
    """Instantiate the network a spec describes. Pure: no randomness beyond torch's weight init.

    Returns:
        A ``torch.nn.Module`` whose input is ``(B, in_channels, *spatial)``.
    """
    module_name, class_name = spec.target.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**copy.deepcopy(dict(spec.kwargs)))
