"""Test helpers that ship with mednas: trial-like objects without a study, and the conformance checks.

Third-party plugins run the check of their extension point in their own tests to prove they fit mednas:
:func:`check_space` (search spaces), :func:`check_metric_term`, :func:`check_layout` and :func:`check_loss`.
"""

from __future__ import annotations

from mednas.spaces._trials import RandomTrial, ReplayTrial
from mednas.testing._conformance import TINY_OPTIONS, check_space, check_spec
from mednas.testing._data import tiny_classification_data, tiny_segmentation_data, tiny_task
from mednas.testing._dicom import FAKE_IDENTIFYING, write_dicom_multiframe, write_dicom_series
from mednas.testing._plugins import check_layout, check_loss, check_metric_term, fresh_plugins

__all__ = [
    "FAKE_IDENTIFYING",
    "TINY_OPTIONS",
    "RandomTrial",
    "ReplayTrial",
    "check_layout",
    "check_loss",
    "check_metric_term",
    "check_space",
    "check_spec",
    "fresh_plugins",
    "tiny_classification_data",
    "tiny_segmentation_data",
    "tiny_task",
    "write_dicom_multiframe",
    "write_dicom_series",
]
