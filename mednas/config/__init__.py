"""Task configuration: typed frozen models, YAML loading with presets and overrides, did-you-mean errors."""

from __future__ import annotations

from mednas.config._load import (
    apply_overrides,
    config_hash,
    deep_merge,
    load_task,
    load_yaml,
    resolve_preset,
    shipped_presets,
    task_to_dict,
    with_settings,
)
from mednas.config._models import (
    BudgetConfig,
    DataConfig,
    LabelsConfig,
    LadderConfig,
    ObjectiveConfig,
    PrivacyConfig,
    ProxyConfig,
    PrunerConfig,
    ReevaluateConfig,
    RungConfig,
    SearchConfig,
    SplitConfig,
    TaskConfig,
    TrainingConfig,
)
from mednas.config._plugins import install_registries

__all__ = [
    "BudgetConfig",
    "DataConfig",
    "LabelsConfig",
    "ObjectiveConfig",
    "PrivacyConfig",
    "ProxyConfig",
    "PrunerConfig",
    "LadderConfig",
    "ReevaluateConfig",
    "RungConfig",
    "SearchConfig",
    "SplitConfig",
    "TaskConfig",
    "TrainingConfig",
    "apply_overrides",
    "config_hash",
    "deep_merge",
    "install_registries",
    "load_task",
    "load_yaml",
    "resolve_preset",
    "shipped_presets",
    "task_to_dict",
    "with_settings",
]
