"""Full-fidelity retraining of the search's best candidates, proxy fidelity, and proxy calibration.

``run_retrain`` trains the top-k specs at full resolution, tests them once and writes ``retrain/<n>/`` and the
``retrain`` and ``proxy_fidelity`` keys of ``summary.json``; ``calibrate_proxy`` measures which proxy setting
ranks random candidates like full training on the user's data. Both train through the one candidate trainer,
:func:`mednas.train.train_candidate`, at a :class:`mednas.train.Fidelity` (proxy or full). The verb users call is
the function :func:`mednas.retrain` (in :mod:`mednas.api`); this package is the noun that holds its parts.

Example:
    >>> from mednas.retraining import proxy_fidelity
    >>> proxy_fidelity([3, 1, 2], [0.9, 0.8, 0.7], [0.85, 0.8, 0.6], [True, True, True])["kendall_tau"]
    1.0
"""

from __future__ import annotations

from mednas.retraining._calibrate import CalibrationResult, ProxySetting, calibrate_proxy, parse_grid
from mednas.retraining._fidelity import LOW_TAU, SEED_NOISE_TAU, proxy_fidelity, rank_agreement, top1_regret
from mednas.retraining._folds import ENSEMBLE_FILE, FOLDS_FILE, run_fold_retrain, t_interval
from mednas.retraining._retrain import RetrainResult, run_retrain, select_candidates

__all__ = [
    "ENSEMBLE_FILE",
    "FOLDS_FILE",
    "LOW_TAU",
    "SEED_NOISE_TAU",
    "CalibrationResult",
    "ProxySetting",
    "RetrainResult",
    "calibrate_proxy",
    "parse_grid",
    "proxy_fidelity",
    "rank_agreement",
    "run_fold_retrain",
    "run_retrain",
    "select_candidates",
    "t_interval",
    "top1_regret",
]
