"""The task reference in docs/ is generated from the config models; a stale copy fails here."""

from __future__ import annotations

from pathlib import Path

from mednas.config.reference import render_reference

ROOT = Path(__file__).resolve().parents[2]


def test_task_reference_is_current() -> None:
    committed = (ROOT / "docs" / "task-reference.md").read_text()
    assert committed == render_reference(), "docs/task-reference.md is stale: run `make docs`"


def test_reference_documents_every_top_level_key() -> None:
    from mednas.config import TaskConfig

    text = render_reference()
    for name in TaskConfig.model_fields:
        assert f"| `{name}` |" in text
