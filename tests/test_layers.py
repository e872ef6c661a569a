"""No module of ``mednas`` imports a higher layer (issue 16, item 1; ../shared/DESIGN.md "Which way imports run").

Every ``import`` in ``mednas/`` is walked with :mod:`ast`, at module level and inside functions (a lazy import is
still a dependency, and so is one under ``TYPE_CHECKING``), plus ``importlib.import_module("mednas....")``
calls with a literal name. The README's
"Layout" section states the same table in words.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mednas"

# The layer order, lowest first. A unit is a top-level module or subpackage of mednas ("__init__" is the package
# root). A module may import its own layer or any layer below, never one above.
#   0 ground:     errors, _registry, _logging, _malloc, _threads, _versions, _progress (no mednas imports but each
#                 other's)
#   1 bottom:     io, config (config also loads the YAML presets in mednas/configs/, which are data, not code)
#   2 record:     rundir, the one reader and writer of the run directory and opener of the study storage beside
#                 it (its records, the trial ranking every step shares)
#   3 components: spaces, spec (what a family samples and build() instantiates; it may only name a class that a
#                 registered family builds, hence the lazy spec -> spaces import), train, data, metrics, runtime
#                 (ONNX writing, ONNX Runtime sessions, INT8 quantization, latency timing), tracking (MLflow runs
#                 from the run directory's records)
#   4 middle:     study, retraining, bundle, reporting, evaluation (evaluation runs bundles)
#   5 top:        api and the package root that re-exports it; testing, the kit plugins' tests call (nothing in
#                 the package may import it)
#   6 entry:      cli (thin over api) and __main__
LAYERS: dict[str, int] = {
    "errors": 0, "_registry": 0, "_logging": 0, "_malloc": 0, "_threads": 0, "_versions": 0, "_progress": 0,
    "io": 1, "config": 1,
    "rundir": 2,
    "spaces": 3, "spec": 3, "train": 3, "data": 3, "metrics": 3, "runtime": 3, "tracking": 3,
    "study": 4, "retraining": 4, "bundle": 4, "reporting": 4, "evaluation": 4,
    "api": 5, "__init__": 5, "testing": 5,
    "cli": 6, "__main__": 6,
}  # fmt: skip

# Same-layer imports between siblings are allowed, but only these, each with its reason: DESIGN says "never
# sideways where a run-directory file will do", so a new one must be argued here, not slipped in.
SIBLINGS: dict[tuple[str, str], str] = {
    ("_registry", "errors"): "a plugin that cannot be loaded raises PluginError",
    ("config", "io"): "task and preset files are read under io's size limits",
    ("spaces", "spec"): "a family samples an ArchSpec",
    ("spec", "spaces"): "a spec may name only a network class a registered family builds (checked lazily)",
    ("train", "data"): "the training loop takes the ArrayData the data plan loads",
    ("train", "spec"): "the candidate trainer builds the network a spec describes",
    ("train", "spaces"): "the candidate trainer adapts a spec to the training shape through its family",
    ("train", "metrics"): "the candidate trainer scores validation outputs with the task's objective",
    (
        "data",
        "spaces",
    ): "the data plan refuses a family that cannot run at the planned shapes, before caching",
    ("evaluation", "bundle"): "external validation loads and runs a frozen bundle",
    (
        "evaluation",
        "reporting",
    ): "validation.html shares report.html's page template, figures and calibration bins",
    (
        "reporting",
        "study",
    ): "status reads the live study storage with the study's engine settings and heartbeats",
    ("__init__", "api"): "the package root re-exports the verbs",
    ("__main__", "cli"): "python -m mednas runs the CLI",
}

# Known violations: none since issue 16 (config asks the registries through mednas.config's provider table, which
# api fills; retraining ranks and opens the storage through mednas.rundir). Keyed by (file, imported module) so
# that an entry names one import, not a whole file; keep it empty.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """Yield ``(line, imported mednas module)`` for every import in ``source``, however deep in functions."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from mednas import api` imports the module mednas.api, not only the package root.
            names = {f"{target}.{a.name}" if _is_module(f"{target}.{a.name}") else target for a in node.names}
            for name in sorted(names):
                yield node.lineno, name
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                arg = arg.values[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield node.lineno, arg.value.rstrip(".")


def violations(source: str, path: Path) -> Iterator[tuple[str, int, str, str]]:
    """Yield ``(file, line, imported module, why)`` for each import of ``source`` that breaks the layer order."""
    module = _module_name(path)
    src = _unit(module)
    relative = path.relative_to(PACKAGE).as_posix()
    for line, target in imports_of(source, module, path.name == "__init__.py"):
        if target != "mednas" and not target.startswith("mednas."):
            continue
        dst = _unit(target)
        if dst == src:
            continue
        if dst not in LAYERS:
            yield relative, line, target, f"{dst!r} has no layer in tests/test_layers.py"
        elif LAYERS[dst] > LAYERS[src]:
            yield (
                relative,
                line,
                target,
                f"upward: {src} (layer {LAYERS[src]}) imports {dst} (layer {LAYERS[dst]})",
            )
        elif LAYERS[dst] == LAYERS[src] and (src, dst) not in SIBLINGS:
            yield relative, line, target, f"sideways: {src} imports its sibling {dst}, not listed in SIBLINGS"


def _all_violations() -> list[tuple[str, int, str, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found.extend(violations(path.read_text(encoding="utf-8"), path))
    return found


def _matches(found: tuple[str, int, str, str], known: tuple[str, str]) -> bool:
    return found[0] == known[0] and (found[2] == known[1] or found[2].startswith(known[1] + "."))


def _known(found: tuple[str, int, str, str]) -> bool:
    return any(_matches(found, known) for known in KNOWN_VIOLATIONS)


def test_every_module_has_a_layer() -> None:
    """A new top-level module or subpackage must be placed in the table before it can be imported."""
    units = {_unit(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert units - set(LAYERS) == set(), "place these in LAYERS (tests/test_layers.py) and README.md 'Layout'"
    assert set(LAYERS) - units == set(), "LAYERS names modules that no longer exist"


def test_no_module_imports_a_higher_layer_or_an_unlisted_sibling() -> None:
    """Every import in mednas/ (module level and inside functions) points down the layer order."""
    bad = [
        f"mednas/{f}:{line}: {target}: {why}"
        for f, line, target, why in _all_violations()
        if not _known((f, line, target, why))
    ]
    assert bad == [], "\n".join(bad)


def test_the_known_violations_and_sibling_pairs_still_occur() -> None:
    """An entry of KNOWN_VIOLATIONS or SIBLINGS that no import needs any more must be deleted, so the lists shrink."""
    found = _all_violations()
    stale = sorted(known for known in KNOWN_VIOLATIONS if not any(_matches(f, known) for f in found))
    assert stale == [], f"remove from KNOWN_VIOLATIONS: {stale}"
    used = set()
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        for _, target in imports_of(path.read_text(encoding="utf-8"), module, path.name == "__init__.py"):
            if target.startswith("mednas."):
                used.add((_unit(module), _unit(target)))
    unused = sorted(pair for pair in SIBLINGS if pair not in used)
    assert unused == [], f"remove from SIBLINGS: {unused}"


@pytest.mark.parametrize(
    ("file", "source", "why"),
    [
        ("io/_fake.py", "def f():\n    from mednas.study import run_search\n", "upward"),
        ("metrics/_fake.py", "import mednas.reporting._curves as C\n", "upward"),
        ("config/_fake.py", "from mednas import api\n", "upward"),
        ("spec.py", "from . import cli\n", "upward"),
        ("metrics/_fake.py", "from mednas.train import fit\n", "sideways"),
        (
            "bundle/_fake.py",
            "import importlib\nm = importlib.import_module('mednas.retraining')\n",
            "sideways",
        ),
        ("data/_fake.py", "from mednas.newthing import x\n", "no layer"),
    ],
)
def test_the_check_catches_a_bad_import(file: str, source: str, why: str) -> None:
    """The walker sees imports inside functions, relative and ``from mednas import`` forms, and import_module."""
    found = list(violations(source, PACKAGE / file))
    assert len(found) == 1 and why in found[0][3], found


def test_the_check_lets_downward_and_listed_imports_pass() -> None:
    """Imports down the order, within a unit, and between listed siblings are not reported."""
    source = "from mednas.io import read_image\nfrom mednas.bundle import load_bundle\nfrom . import _html\n"
    assert list(violations(source, PACKAGE / "evaluation/_fake.py")) == []
