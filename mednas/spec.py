"""The architecture of one candidate: a stock MONAI network class plus its constructor arguments.

An :class:`ArchSpec` is what a search space samples and what every later step (training, retraining,
export) rebuilds. It is frozen, round-trips through JSON, and has a stable hash, so a candidate can be
rebuilt anywhere MONAI is installed: ``import target; target(**kwargs)``.

Specs arrive from files that may have been edited by someone else (``trials/<n>/spec.json``, a bundle's
``configs/metadata.json``), so nothing in one is trusted: the target must be one of the network classes the
registered search families build (:func:`allowed_targets`), checked as a string before anything is imported;
once resolved it must be a ``torch.nn.Module`` subclass; every keyword must be in the class's signature; and the
network's parameters are counted on PyTorch's ``meta`` device (no memory) against :data:`MAX_PARAMETERS` before
it is built for real. MONAI resolves the string arguments these classes take (``act``, ``norm``, ``block``,
``upsample_mode``, ...) through fixed tables (``LayerFactory`` and ``look_up_option``), never by importing a path.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mednas.errors import MednasError, SpecError

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_PARAMETERS", "ArchSpec", "SpecError", "allowed_targets", "build", "check_spec", "load_spec"]

_PREFIX = "monai.networks.nets."
#: Stock MONAI networks allowed although no built-in family samples them (plain, download-free classes).
EXTRA_NETWORKS = ("BasicUNet",)
#: Largest network a spec may describe (float32: 2 GB of weights); ``$MEDNAS_MAX_PARAMETERS`` changes it.
MAX_PARAMETERS = 500_000_000
# Bounds on a spec's kwargs, checked before anything is built: far above any real network's arguments.
_MAX_JSON_BYTES = 64 * 1024
_MAX_DEPTH = 8
_MAX_ITEMS = 256
_MAX_INT = 1_000_000
_checked: dict[str, int] = {}


def allowed_targets() -> frozenset[str]:
    """The class paths a spec may name: each registered search family's ``network`` plus :data:`EXTRA_NETWORKS`.

    Example:
        >>> "monai.networks.nets.DynUNet" in allowed_targets()
        True
    """
    from mednas.spaces._registry import SPACES, _ensure_builtins

    _ensure_builtins()
    names = {f"{_PREFIX}{n}" for n in EXTRA_NETWORKS}
    for key in SPACES.names():
        network = getattr(SPACES.get(key), "network", "")
        if (
            isinstance(network, str)
            and network.startswith(_PREFIX)
            and network[len(_PREFIX) :].isidentifier()
        ):
            names.add(network)
    return frozenset(names)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_target(target: Any) -> None:
    """Refuse any target that is not, as a string, an allowed network class path (nothing is imported)."""
    if not isinstance(target, str) or target not in allowed_targets():
        allowed = ", ".join(sorted(t[len(_PREFIX) :] for t in allowed_targets()))
        raise SpecError(
            f"target {_short(target)} is not an allowed network class (allowed: monai.networks.nets."
            f"{{{allowed}}}); refusing to build it"
        )


def _check_bounds(kwargs: Any) -> None:
    """Refuse kwargs that are not a small JSON object of finite numbers (walked without recursion)."""
    if not isinstance(kwargs, Mapping):
        raise SpecError(f"kwargs must be a JSON object, got {type(kwargs).__name__}")
    stack: list[tuple[str, Any, int]] = [(str(k), v, 1) for k, v in kwargs.items()]
    seen = 0
    while stack:
        where, value, depth = stack.pop()
        seen += 1
        if depth > _MAX_DEPTH or seen > 16 * _MAX_ITEMS:
            raise SpecError(f"kwargs nested too deeply or too large at {where}")
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            if abs(value) > _MAX_INT:
                raise SpecError(
                    f"kwargs {where} = {_short(value, 40)} exceeds {_MAX_INT:,}; refusing a network that large"
                )
        elif isinstance(value, float):
            if not math.isfinite(value) or abs(value) > _MAX_INT:
                raise SpecError(f"kwargs {where} = {value!r} is not a finite number below {_MAX_INT:,}")
        elif isinstance(value, str):
            if len(value) > 1024:
                raise SpecError(f"kwargs {where} is a string of {len(value)} characters")
        elif isinstance(value, Mapping):
            if len(value) > _MAX_ITEMS:
                raise SpecError(f"kwargs {where} has {len(value)} entries")
            stack.extend((f"{where}.{k}", v, depth + 1) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            if len(value) > _MAX_ITEMS:
                raise SpecError(f"kwargs {where} has {len(value)} items")
            stack.extend((f"{where}[{i}]", v, depth + 1) for i, v in enumerate(value))


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

    Raises:
        SpecError: For a target that is not an allowed network class, or kwargs that are not a small JSON object.

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
        _check_target(self.target)
        _check_bounds(self.kwargs)
        canonical = _canonical(dict(self.kwargs))
        object.__setattr__(self, "kwargs", canonical)
        payload = json.dumps(
            {"target": self.target, "kwargs": canonical}, sort_keys=True, separators=(",", ":")
        )
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
        """Rebuild a spec from :meth:`to_dict` output (the ``hash`` key, if present, is checked).

        Raises:
            SpecError: For anything but a valid spec of an allowed network class (the target is checked first).
        """
        if not isinstance(data, Mapping):
            raise SpecError(f"a spec must be a JSON object, got {type(data).__name__}")
        _check_target(data.get("target"))
        kwargs = data.get("kwargs")
        _check_bounds(kwargs)
        assert isinstance(kwargs, Mapping)
        try:
            spec = cls(
                target=data["target"],
                kwargs=kwargs,
                family=str(data.get("family", "")),
                spatial_dims=int(data.get("spatial_dims", kwargs.get("spatial_dims", 2))),
                in_channels=int(data.get("in_channels", 1)),
                out_channels=int(data.get("out_channels", 2)),
            )
        except SpecError:
            raise
        except (TypeError, ValueError) as exc:
            raise SpecError(f"not a valid architecture spec: {' '.join(str(exc).split())[:200]}") from None
        if "hash" in data and data["hash"] != spec.hash:
            raise SpecError(
                f"spec hash mismatch: file says {_short(data['hash'], 40)}, contents give {spec.hash}"
            )
        return spec

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        """Rebuild a spec from :meth:`to_json` output."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise SpecError(f"not JSON: {' '.join(str(exc).split())[:120]}") from None
        return cls.from_dict(data)

    def replace_kwargs(self, **changes: Any) -> ArchSpec:
        """Return a copy with some constructor arguments changed (e.g. ``image_size`` for full resolution)."""
        kwargs = copy.deepcopy(dict(self.kwargs))
        kwargs.update(changes)
        return ArchSpec(
            self.target, kwargs, self.family, self.spatial_dims, self.in_channels, self.out_channels
        )


def build(spec: ArchSpec) -> torch.nn.Module:
    """Instantiate the network a spec describes, after :func:`check_spec`. Pure: no randomness beyond torch's init.

    Returns:
        A ``torch.nn.Module`` whose input is ``(B, in_channels, *spatial)``.

    Raises:
        SpecError: See :func:`check_spec`.
    """
    cls = _resolve(spec)
    check_spec(spec)
    return cls(**copy.deepcopy(dict(spec.kwargs)))


def check_spec(spec: ArchSpec) -> int:
    """Check that a spec builds an allowed network of bounded size, without allocating it; return its parameters.

    The class is resolved (an allowed target only), its signature must take every keyword and have every
    required one, and the network is built on PyTorch's ``meta`` device (shapes only, no memory; a few
    milliseconds) to count parameters against :data:`MAX_PARAMETERS`.

    Raises:
        SpecError: One line naming the target and the problem.
    """
    if spec.hash in _checked:
        return _checked[spec.hash]
    import torch

    cls = _resolve(spec)
    limit = int(os.environ.get("MEDNAS_MAX_PARAMETERS") or MAX_PARAMETERS)
    try:
        with torch.device("meta"):
            net = cls(**copy.deepcopy(dict(spec.kwargs)))
        n = int(sum(p.numel() for p in net.parameters()))
    except MednasError:
        raise
    except Exception as exc:  # noqa: BLE001 - MONAI raises ValueError/TypeError/AssertionError/... for bad kwargs
        raise SpecError(
            f"{spec.class_name} cannot be built from these kwargs: {type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:200]}"
        ) from None
    if n > limit:
        raise SpecError(
            f"{spec.class_name} with these kwargs has {n:,} parameters, more than the limit of {limit:,} "
            "($MEDNAS_MAX_PARAMETERS); refusing to build it"
        )
    if len(_checked) > 4096:
        _checked.clear()
    _checked[spec.hash] = n
    return n


def load_spec(data: Any, where: str | os.PathLike[str], *, error: type[MednasError] = SpecError) -> ArchSpec:
    """Read a spec from untrusted JSON data and check it completely (:func:`check_spec`) before anything uses it.

    Args:
        data: The parsed JSON (``trials/<n>/spec.json``, ``metadata.json["mednas"]["spec"]``).
        where: The file it came from, named in the error.
        error: The error class to raise (``BundleError`` for bundles, ``RunDirError`` for run directories).

    Raises:
        MednasError: ``error``, one line: ``<where>: <problem>``.
    """
    try:
        spec = ArchSpec.from_dict(data)
        check_spec(spec)
    except SpecError as exc:
        raise error(f"{os.fspath(where)}: {exc}") from None
    return spec


def _resolve(spec: ArchSpec) -> type:
    """Return the network class of an allowed target (checked again here: the dataclass can be bypassed)."""
    _check_target(spec.target)
    import importlib

    import torch

    module_name, class_name = spec.target.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise SpecError(f"target {spec.target!r} is not a torch.nn.Module class; refusing to build it")
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        raise SpecError(
            f"target {spec.target!r} has no inspectable signature; refusing to build it"
        ) from None
    named = {k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(spec.kwargs) - named)
    if unknown:
        from mednas._registry import did_you_mean

        raise SpecError(
            f"{spec.class_name} takes no argument {unknown[0]!r}{did_you_mean(unknown[0], sorted(named))}; "
            "refusing to build it"
        )
    missing = [k for k in named if params[k].default is inspect.Parameter.empty and k not in spec.kwargs]
    if missing:
        raise SpecError(f"{spec.class_name} needs argument {missing[0]!r}, missing from the spec")
    return cls
