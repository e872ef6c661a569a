"""mednas: neural architecture search for medical imaging.

A task file says where the images are, what the labels are and what a clinically good model means; a search
explores MONAI network families with Optuna on a cheap proxy and scores candidates by that clinical objective.

Example:
    >>> import mednas
    >>> result = mednas.search("tasks/demo-xray-nodule.yaml", n_trials=8)  # doctest: +SKIP
    >>> result.summary["best"]  # doctest: +SKIP
"""

from __future__ import annotations

# Verbs are functions (mednas.search, mednas.retrain, mednas.export, mednas.report, ...); packages are nouns
# (mednas.study, mednas.retraining, mednas.bundle, mednas.reporting), so importing one never hides the other.
from mednas.api import (
    calibrate_proxy,
    evaluate,
    export,
    load,
    load_config,
    predict,
    report,
    retrain,
    reveal_splits,
    search,
    status,
)
from mednas.errors import ConfigError, DataError, MednasError, RunDirError
from mednas.spec import ArchSpec, build

__version__ = "0.1.0"

__all__ = [
    "ArchSpec",
    "ConfigError",
    "DataError",
    "MednasError",
    "RunDirError",
    "__version__",
    "build",
    "calibrate_proxy",
    "evaluate",
    "export",
    "load",
    "load_config",
    "predict",
    "report",
    "retrain",
    "reveal_splits",
    "search",
    "status",
]
