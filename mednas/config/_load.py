"""Load a task: YAML (safe loader) -> presets merged under it -> ``--set`` overrides -> validated model.

Errors name the file and the key path (``search.n_trails: unknown key (did you mean 'n_trials'?)``) and
are raised as :class:`~mednas.errors.ConfigError` (exit status 2).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mednas.config._models import TaskConfig
from mednas.errors import ConfigError

__all__ = [
    "apply_overrides",
    "config_hash",
    "deep_merge",
    "load_task",
    "load_yaml",
    "resolve_preset",
    "resolve_target",
    "shipped_presets",
    "shipped_targets",
    "task_to_dict",
    "with_settings",
]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Keys that may change between runs of one study without changing what is searched.
_VOLATILE_KEYS = (
    "search.n_trials",
    "search.timeout",
    "search.max_failures",
    "search.keep_weights",
    "search.reevaluate",
    "training.patch",
    "training.threads",
    "device",
    "data.cache_dir",
    "description",
    "target",  # a deployment target's name; the objective.latency settings it gives are part of the identity
    "tracking",  # where runs are logged (MLflow) changes nothing that is searched; older runs keep their hash
)
# Keys added after runs were made, left out of the hash while they hold their default, so that a run made before
# the key existed keeps its hash and can be continued (a task that sets one searches something new: it counts).
_ADDED_KEYS: dict[str, Any] = {
    "search.fidelity": "flat",
    "search.ladder.promotion": "deferred",  # first: an older ladder run has no such key, whatever its rungs
    "search.ladder": {"rungs": None, "eta": 3, "brackets": "successive_halving"},
    "search.inherit": False,
    # objective.latency's keys beyond input_shape and repeats, at the values that stand for how runs made before
    # them measured: eager torch (RunDir.task fills `runtime: torch` into such a run's resolved task), float32, a
    # batch of one, on the trial's device (threads and warm-up were not settings then; their defaults stand in).
    "objective.latency.runtime": "torch",
    "objective.latency.precision": "fp32",
    "objective.latency.threads": 1,
    "objective.latency.batch": 1,
    "objective.latency.warmup": 3,
    "objective.latency.device": None,
}
#: What ``objective.latency`` held in every run made before its runtime keys existed, unless the task set it.
_LEGACY_LATENCY_DEFAULTS = {"input_shape": None, "repeats": 10}


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader.

    Raises:
        ConfigError: If the file is missing, not YAML, or not a mapping.
    """
    from mednas.io._limits import MAX_YAML_BYTES, load_yaml_bounded, read_text_bounded

    path = Path(path)
    text = read_text_bounded(path, MAX_YAML_BYTES, ConfigError, "YAML")
    data = load_yaml_bounded(text, str(path), ConfigError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively by ``over`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides; values are parsed as YAML (``3``, ``[64, 64]``, ``null``).

    Raises:
        ConfigError: If an override has no ``=`` or walks into a non-mapping.
    """
    from mednas.io._limits import load_yaml_bounded

    out = copy.deepcopy(dict(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. search.n_trials=12")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: empty key")
        # Text that is not YAML stays text; a broken limit (deep nesting, alias expansion) is refused.
        value = (
            load_yaml_bounded(raw, f"--set {key}", ConfigError, invalid_as_text=True) if raw.strip() else ""
        )
        node: dict[str, Any] = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a mapping")
            node = nxt
        node[parts[-1]] = value
    return out


def resolve_preset(preset: str, task_path: Path | None = None) -> Path:
    """Find a preset given as a file path or by name (``quick-cpu``, ``objectives/screening``).

    A value ending in ``.yaml``/``.yml``, or naming an existing file, is a path (relative to the working
    directory). A name is looked up in ``./configs``, then in ``configs/`` beside the task file's folder (a
    project's own presets), then among the presets shipped inside mednas (:func:`shipped_presets`), so the
    shipped names work from any working directory.

    Raises:
        ConfigError: An unknown name (the known ones listed on the same line), or a path to a missing file
            that looks like a shipped preset's (naming the preset to use instead).
    """
    candidate = Path(preset)
    shipped = shipped_presets()
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.exists() and candidate.parent.name in ("configs", "objectives"):
            # `--preset configs/quick-cpu.yaml` outside the repository: point to the name that works anywhere.
            name = f"objectives/{candidate.stem}" if candidate.parent.name == "objectives" else candidate.stem
            if name in shipped:
                raise ConfigError(
                    f"{preset}: file not found; the shipped preset of that name is --preset {name}"
                )
        return candidate
    if not _PRESET_NAME.fullmatch(preset):
        raise ConfigError(
            f"preset {preset!r}: neither a YAML file nor a preset name (letters, digits, '-', '_', "
            "and '/' between folder and name)"
        )
    roots = [Path.cwd() / "configs"]
    if task_path is not None:
        roots.append(task_path.resolve().parent.parent / "configs")
    for root in roots:
        for ext in (".yaml", ".yml"):
            if (root / f"{preset}{ext}").is_file():
                return root / f"{preset}{ext}"
    if preset in shipped:
        return shipped[preset]
    by_stem = [name for name in shipped if name.rsplit("/", 1)[-1] == preset]
    if len(by_stem) == 1:  # `screening` for `objectives/screening`
        return shipped[by_stem[0]]
    known = sorted(set(shipped) | {p.stem for r in roots if r.is_dir() for p in r.glob("*.y*ml")})
    from mednas._registry import did_you_mean

    raise ConfigError(
        f"preset {preset!r} not found{did_you_mean(preset, known)}; known: {', '.join(known) or 'none'}"
    )


_PRESET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")


def shipped_presets() -> dict[str, Path]:
    """Return the presets shipped with mednas (package data ``mednas/configs``), by name.

    Names are file paths below that folder without the extension: ``quick-cpu``, ``gpu-day``,
    ``objectives/screening``.

    Example:
        >>> sorted(shipped_presets())[:2]
        ['gpu-day', 'objectives/cost-weighted']
    """
    from importlib.resources import files

    # An installed package is a folder on disk (mednas is not zip-safe), so the resource is a real path.
    root = Path(str(files("mednas") / "configs"))
    if not root.is_dir():
        return {}
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.y*ml")):
        name = path.relative_to(root).with_suffix("").as_posix()
        # Deployment targets are chosen with the task's `target:` key (see shipped_targets), not as presets.
        if path.suffix in (".yaml", ".yml") and path.is_file() and not name.startswith(f"{_TARGETS}/"):
            out.setdefault(name, path)
    return out


_TARGETS = "targets"
#: The ``objective.latency`` keys a deployment target sets.
_TARGET_KEYS = frozenset({"runtime", "precision", "threads", "batch", "device"})


def shipped_targets() -> dict[str, Path]:
    """Return the deployment targets shipped with mednas (``mednas/configs/targets/*.yaml``), by name.

    Example:
        >>> sorted(shipped_targets())
        ['cpu-1thread', 'cpu-1thread-int8', 'cpu-4thread', 'gpu']
    """
    from importlib.resources import files

    root = Path(str(files("mednas") / "configs" / _TARGETS))
    if not root.is_dir():
        return {}
    return {p.stem: p for p in sorted(root.glob("*.yaml")) if p.is_file()}


def resolve_target(name: str, task_path: Path | None = None) -> Path:
    """Find the deployment target ``name`` (the task's ``target:`` key): a project's own or a shipped one.

    Looked up like a preset: ``./configs/targets/NAME.yaml``, then ``configs/targets/`` beside the task file's
    folder, then the targets shipped inside mednas (:func:`shipped_targets`).

    Raises:
        ConfigError: An unknown name, the known ones listed on the same line.
    """
    roots = [Path.cwd() / "configs" / _TARGETS]
    if task_path is not None:
        roots.append(task_path.resolve().parent.parent / "configs" / _TARGETS)
    if _PRESET_NAME.fullmatch(name) and "/" not in name:
        for root in roots:
            if (root / f"{name}.yaml").is_file():
                return root / f"{name}.yaml"
    shipped = shipped_targets()
    if name in shipped:
        return shipped[name]
    from mednas._registry import did_you_mean

    known = sorted(set(shipped) | {p.stem for r in roots if r.is_dir() for p in r.glob("*.yaml")})
    raise ConfigError(
        f"target: unknown deployment target {name!r}{did_you_mean(name, known)}; known: {', '.join(known) or 'none'}"
    )


def _apply_target(data: dict[str, Any], task_path: Path | None, source: str) -> dict[str, Any]:
    """Merge the deployment target ``data["target"]`` names *under* ``data`` (the task's own keys win).

    A target file sets ``objective.latency`` and nothing else.

    Raises:
        ConfigError: An unknown target, or a target file that sets other keys.
    """
    name = data.get("target")
    if name is None:
        return data
    if not isinstance(name, str):
        raise ConfigError(
            f"{source}: target: expected the name of a deployment target, got {type(name).__name__}"
        )
    try:
        path = resolve_target(name, task_path)
    except ConfigError as exc:
        objective = data.get("objective")
        latency = objective.get("latency") if isinstance(objective, dict) else None
        if isinstance(latency, dict) and _TARGET_KEYS.issubset(latency):
            # A resolved task (a --workers child reads resolved.yaml) holds every key the target set: a project's own
            # target file, beside the task file but not the run directory, is not needed again.
            return data
        raise ConfigError(f"{source}: {exc}") from None
    preset = load_yaml(path)
    objective = preset.get("objective")
    if set(preset) != {"objective"} or not isinstance(objective, dict) or set(objective) != {"latency"}:
        raise ConfigError(f"{path}: a deployment target sets objective.latency and nothing else")
    return deep_merge(preset, data)


_OBJECTIVE_SECTIONS = ("operating_point", "constraints", "secondary", "latency", "bootstrap")


def _expand_objective_shorthand(data: dict[str, Any]) -> dict[str, Any]:
    """Rewrite ``objective: {metric: m, ...}`` as ``objective: {terms: [{metric: m, ...}], ...}`` before merging.

    Applied to presets, so that a task's own objective (shorthand or terms) replaces a preset's terms while
    the preset's constraints or secondary objectives still merge in.
    """
    objective = data.get("objective")
    if isinstance(objective, dict) and "metric" in objective and "terms" not in objective:
        outer = {k: v for k, v in objective.items() if k in _OBJECTIVE_SECTIONS}
        term = {k: v for k, v in objective.items() if k not in _OBJECTIVE_SECTIONS}
        data = {**data, "objective": {"terms": [term], **outer}}
    return data


def _expand_vars(value: str, key: str, source: str) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{source}: {key}: environment variable ${{{name}}} is not set")
        return os.environ[name]

    return _VAR.sub(sub, value)


def _resolve_paths(data: dict[str, Any], base_dir: Path, source: str) -> None:
    # Paths in a task file are relative to the task file, after ${VAR} expansion.
    section = data.get("data")
    if not isinstance(section, dict):
        return
    for key in ("path", "cache_dir"):
        value = section.get(key)
        if isinstance(value, str) and value:
            expanded = os.path.expanduser(_expand_vars(value, f"data.{key}", source))
            path = Path(expanded)
            section[key] = str(path if path.is_absolute() else (base_dir / path).resolve())


def _format_loc(loc: tuple[Any, ...], data: Mapping[str, Any]) -> str:
    parts = list(loc)
    # Discriminated unions put the tag into loc (objective.terms.0.dice.weight): drop it.
    for i in range(len(parts) - 1, 0, -1):
        if (
            isinstance(parts[i - 1], int)
            and isinstance(parts[i], str)
            and parts[:2] == ["objective", "terms"]
            and i == 3
        ):
            del parts[i]
    # `objective: {metric: ...}` is shorthand for one term: report keys where the user wrote them.
    objective = data.get("objective")
    if parts[:3] == ["objective", "terms", 0] and isinstance(objective, Mapping) and "metric" in objective:
        parts = ["objective", *parts[3:]]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _format_errors(exc: ValidationError, source: str, data: Mapping[str, Any]) -> str:
    from mednas._registry import did_you_mean

    errors = exc.errors()
    first = errors[0]
    loc = _format_loc(tuple(first["loc"]), data)
    msg = first["msg"]
    ctx = first.get("ctx") or {}
    if first["type"] == "unknown_key":
        key = ctx.get("key", "?")
        loc = f"{loc}.{key}" if loc else key
        msg = msg.replace(f"unknown key '{key}'", "unknown key", 1)
    elif first["type"] == "missing":
        msg = "required key is missing"
    elif first["type"] == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        msg = f"{first['input']!r} is not one of {', '.join(choices)}{did_you_mean(str(first['input']), choices)}"
    elif first["type"] == "union_tag_invalid":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        tag = str(ctx.get("tag", ""))
        msg = f"unknown metric {tag!r}{did_you_mean(tag, choices)}; known: {', '.join(choices)}"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    where = f"{loc}: " if loc else ""
    return f"{source}: {where}{msg}{more}"


def load_task(
    path: str | os.PathLike[str] | Mapping[str, Any],
    *,
    presets: Sequence[str | os.PathLike[str]] = (),
    overrides: Sequence[str] = (),
) -> TaskConfig:
    """Load and validate a task.

    Args:
        path: Task YAML file, or an already-parsed mapping (paths then relative to the working directory).
        presets: Preset files or names merged *under* the task, in order (later presets win).
        overrides: ``key.path=value`` strings applied last.

    Returns:
        The frozen, validated task.

    Raises:
        ConfigError: With the file, key path and problem, for any invalid input.

    Example:
        >>> task = load_task("tasks/demo-xray-nodule.yaml", overrides=["search.n_trials=4"])  # doctest: +SKIP
    """
    if isinstance(path, Mapping):
        data, source, base_dir, task_path = dict(path), "<task>", Path.cwd(), None
    else:
        task_path = Path(path)
        data, source, base_dir = load_yaml(task_path), str(task_path), task_path.resolve().parent
    merged: dict[str, Any] = {}
    for preset in presets:
        preset_path = resolve_preset(str(preset), task_path)
        merged = deep_merge(merged, _expand_objective_shorthand(load_yaml(preset_path)))
    merged = deep_merge(merged, data)
    merged = apply_overrides(merged, overrides)
    merged = _apply_target(merged, task_path, source)
    _resolve_paths(merged, base_dir, source)
    try:
        return TaskConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, merged)) from None


def with_settings(task: TaskConfig, values: Mapping[str, Any]) -> TaskConfig:
    """Return ``task`` with dotted keys set to ``values`` (validated again), e.g. what the command line chose.

    Args:
        task: A validated task.
        values: ``{"search.n_trials": 30, "search.timeout": 600.0, "device": "cpu"}``; ``None`` is a value
            (``search.timeout: null`` means no timeout).

    Raises:
        ConfigError: A value the task schema refuses.

    Example:
        >>> task = load_task("tasks/demo-xray-nodule.yaml")  # doctest: +SKIP
        >>> with_settings(task, {"search.n_trials": 30}).search.n_trials  # doctest: +SKIP
        30
    """
    data = task_to_dict(task)
    for dotted, value in values.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    try:
        return TaskConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, "<command line>", data)) from None


def task_to_dict(task: TaskConfig) -> dict[str, Any]:
    """Return the resolved task as plain JSON/YAML values (what ``resolved.yaml`` holds)."""
    return json.loads(task.model_dump_json())


def config_hash(task: TaskConfig) -> str:
    """Hash of the resolved task without the keys that may change between sessions of one study.

    Two invocations with the same hash search the same thing and may share a study.
    """
    data = task_to_dict(task)
    for dotted in _VOLATILE_KEYS:
        node: Any = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    if not task.objective.measures_latency and _latency_at_defaults(task):
        # Nothing is timed, so how it would be timed does not change what is searched: at its defaults the section
        # hashes as it did before its runtime keys existed (repeats 10), and such a run can be continued.
        data["objective"]["latency"] = {
            **_LEGACY_LATENCY_DEFAULTS,
            "input_shape": task.objective.latency.input_shape,
        }
    for dotted, default in _ADDED_KEYS.items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and last in node and node[last] == default:
            del node[last]
    payload = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _latency_at_defaults(task: TaskConfig) -> bool:
    """Whether every ``objective.latency`` key but ``input_shape`` holds its default."""
    latency = task.objective.latency
    return all(
        getattr(latency, name) == field.default
        for name, field in type(latency).model_fields.items()
        if name != "input_shape"
    )
