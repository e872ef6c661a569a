"""One package-version lookup (mednas/_versions.py) behind env.json, the marker, bundles, pages and --version."""

from __future__ import annotations

import ast
from pathlib import Path

from mednas._versions import package_version, package_versions

PACKAGE = Path(__file__).resolve().parents[1] / "mednas"


def test_installed_and_missing_distributions() -> None:
    assert package_version("numpy")
    assert package_version("no-such-distribution-mednas") is None
    got = package_versions(["numpy", "no-such-distribution-mednas"])
    assert (
        list(got) == ["numpy", "no-such-distribution-mednas"] and got["no-such-distribution-mednas"] is None
    )


def test_no_other_module_reads_package_metadata_versions() -> None:
    """`importlib.metadata.version` is called in one place; entry points (plugins) may still use the module."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_versions.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            wanted = ("version", "PackageNotFoundError")
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "importlib.metadata"
                and any(a.name in wanted for a in node.names)
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "version"
                and isinstance(node.value, ast.Name)
                and node.value.id == "metadata"
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []
