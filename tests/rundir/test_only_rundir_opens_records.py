"""Only the ``RunDir`` API opens ``resolved.yaml``, ``summary.json`` and ``*/metrics.json`` (issue 16, item 2).

Every string constant in ``mednas/`` outside ``mednas/rundir/`` that is not a docstring, f-strings' literal parts
included, is checked for a *path* to one of the three files: the bare name (``rd.root / "summary.json"``) or a name
after a slash (``f"{root}/trials/{n}/metrics.json"``, ``"trials/*/metrics.json"``). Prose that mentions a file
(``"`resolved.yaml` records the settings"``) is not a path and passes. Code that would open a record by name fails
here; so does code that reads or writes through the paths ``RunDir`` gives for messages (``summary_path``,
``resolved_path``, ``trial_record_path(n)``, ``retrained_path(n)``). It asks ``RunDir`` (or takes the name from ``mednas.rundir.RESOLVED``, ``SUMMARY``, ``RECORD``). The check
itself is tested on a planted module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mednas"
NAMES = ("resolved.yaml", "summary.json", "metrics.json")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def record_names(source: str) -> Iterator[tuple[int, str]]:
    """``(line, file name)`` for every non-docstring string constant in ``source`` naming a run record."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value.strip()
            for name in NAMES:
                if text == name or text.endswith(("/" + name, "\\" + name)):
                    yield node.lineno, name


#: RunDir's paths of the records: for messages and existence checks, never to read or write through.
RECORD_PATHS = {"summary_path", "resolved_path", "trial_record_path", "retrained_path"}
#: What reads or writes a file.
IO_CALLS = {
    "read_json", "write_json", "load_yaml", "write_yaml", "read_text", "write_text", "open", "safe_load",
    "read_bytes", "write_bytes", "load", "dump",
}  # fmt: skip


def _names_record_path(node: ast.AST) -> bool:
    return any(isinstance(sub, ast.Attribute) and sub.attr in RECORD_PATHS for sub in ast.walk(node))


def record_path_io(source: str) -> Iterator[int]:
    """Lines that read or write through one of RunDir's record paths (``open(rd.summary_path)``,
    ``rd.resolved_path.read_text()``, ``write_json(rd.trial_record_path(3), ...)``)."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", getattr(node.func, "id", ""))
        if name not in IO_CALLS:
            continue
        receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
        if any(_names_record_path(a) for a in [*node.args, *(k.value for k in node.keywords)]) or (
            receiver is not None and _names_record_path(receiver)
        ):
            yield node.lineno


def test_the_check_finds_a_planted_reader() -> None:
    planted = '''
"""Reads summary.json (a docstring: allowed)."""
def f(rd):
    """And metrics.json here too."""
    path = rd.root / "summary.json"
    note = "`resolved.yaml` in the run directory records the result"  # prose: allowed
    return open(f"{rd.root}/trials/1/metrics.json").read(), "resolved.yaml"
'''
    assert list(record_path_io(planted)) == []
    through_paths = """
import json
def f(rd, n):
    rd.require(rd.summary_path, rd.resolved_path)  # an existence check: allowed
    print(f"{rd.trial_record_path(n)}: bad")  # a message: allowed
    a = json.loads(rd.summary_path.read_text())
    b = read_json(rd.trial_record_path(n))
    write_json(rd.retrained_path(n, seed_dir=None), {})
    with open(rd.resolved_path) as fh:
        return a, b, fh.read()
"""
    assert sorted(record_path_io(through_paths)) == [6, 7, 8, 9]
    assert sorted(record_names(planted)) == [(5, "summary.json"), (7, "metrics.json"), (7, "resolved.yaml")]


def test_no_module_outside_rundir_names_a_run_record() -> None:
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if "rundir" not in path.relative_to(PACKAGE).parts
        for line, name in record_names(path.read_text(encoding="utf-8"))
    ]
    found += [
        f"{path.relative_to(PACKAGE.parent)}:{line}: reads or writes through a RunDir record path"
        for path in sorted(PACKAGE.rglob("*.py"))
        if "rundir" not in path.relative_to(PACKAGE).parts
        for line in record_path_io(path.read_text(encoding="utf-8"))
    ]
    assert not found, "open these through mednas.rundir.RunDir:\n" + "\n".join(found)
