"""Names a task takes from plugin registries are checked through what ``mednas.api`` installs in config.

config sits below the registries of search spaces, metric terms, layouts and losses (tests/test_layers.py), so
it asks them through :func:`mednas.config.install_registries`; these tests pin what that hook must keep doing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mednas.config import _plugins, install_registries, load_task
from mednas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _task(tmp_path: Path, **changes: Any) -> Path:
    data: dict[str, Any] = {
        "name": "t",
        "problem": "classification",
        "spatial_dims": 2,
        "data": {"format": "datalist", "path": "data/datalist.json"},
        "labels": {"names": ["normal", "finding"]},
        "objective": {"metric": "auroc"},
        "search": {"spaces": ["resnet"]},
        **changes,
    }
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class _Layouts:
    """A stand-in layout registry holding one layout, ``tsv_rows``, that needs no path."""

    class TsvRows:
        needs_path = False

    def find(self, name: str) -> Any:
        return self.TsvRows if name == "tsv_rows" else None

    def names(self, pattern: str = "*") -> list[str]:
        return ["csv", "datalist", "decathlon", "demo", "folders", "medmnist", "tsv_rows"]


@pytest.fixture
def own_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Install providers for this test only (the package's come back afterwards)."""
    monkeypatch.setattr(_plugins, "_PROVIDERS", dict(_plugins._PROVIDERS))


def test_importing_mednas_installs_every_registry() -> None:
    """``import mednas`` (which imports mednas.api) leaves a provider for each kind a task names."""
    assert set(_plugins._PROVIDERS) == set(_plugins.KINDS)
    assert "resnet" in _plugins.registry("space").names()
    assert _plugins.registered("loss", "focal") is not None
    assert _plugins.registered("metric", "no_such_metric") is None


@pytest.mark.usefixtures("own_providers")
def test_a_layout_name_is_checked_against_the_installed_registry(tmp_path: Path) -> None:
    """A name the installed registry knows passes (its ``needs_path`` applies); a typo gets its did-you-mean."""
    install_registries(layout=_Layouts)
    task = load_task(_task(tmp_path, data={"format": "tsv_rows"}))
    assert task.data.format == "tsv_rows"
    with pytest.raises(ConfigError) as err:
        load_task(_task(tmp_path, data={"format": "tsv_rowz", "path": "x"}))
    message = str(err.value)
    assert "data.format: 'tsv_rowz' is not one of" in message and "did you mean 'tsv_rows'" in message
    assert "\n" not in message


@pytest.mark.usefixtures("own_providers")
def test_a_missing_provider_is_a_clear_error_not_a_silent_pass(tmp_path: Path) -> None:
    """Without a loss registry a plugin loss cannot be told from a typo: say so instead of guessing."""
    _plugins._PROVIDERS.pop("loss")
    with pytest.raises(RuntimeError, match="no loss registry installed"):
        load_task(_task(tmp_path, training={"loss": "smooth_ce"}))
    assert load_task(_task(tmp_path, training={"loss": "focal"})).training.loss == "focal"


def test_install_registries_refuses_an_unknown_kind() -> None:
    """A misspelt kind fails at once rather than installing a provider nobody asks."""
    with pytest.raises(ValueError, match="no registry kind 'losses'; kinds: space, metric, layout, loss"):
        install_registries(losses=lambda: None)  # type: ignore[arg-type]


def test_validating_a_task_of_builtins_imports_no_registry() -> None:
    """The registries are imported only when a task names something not built in (metrics pull in scipy)."""
    code = (
        "import sys\n"
        "from mednas.config import load_task\n"
        f"load_task({str(ROOT / 'tasks' / 'demo-xray-nodule.yaml')!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in ("
        "['mednas', 'spaces'], ['mednas', 'metrics'], ['mednas', 'data'], ['mednas', 'train'])))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
