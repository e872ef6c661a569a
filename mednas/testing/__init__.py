"""Test helpers that ship with mednas: trial-like objects without a study, and the search-space conformance suite.

Third-party search spaces run :func:`check_space` in their own tests to prove they fit mednas.
"""

from __future__ import annotations

from mednas.testing._conformance import TINY_OPTIONS, check_space, check_spec
from mednas.testing._data import tiny_classification_data, tiny_segmentation_data, tiny_task
from mednas.testing._dicom import FAKE_IDENTIFYING, write_dicom_multiframe, write_dicom_series
from mednas.testing._trials import RandomTrial, ReplayTrial

__all__ = [
    "FAKE_IDENTIFYING",
    "TINY_OPTIONS",
    "RandomTrial",
    "ReplayTrial",
    "check_space",
    "check_spec",
    "tiny_classification_data",
    "tiny_segmentation_data",
    "tiny_task",
    "write_dicom_multiframe",
    "write_dicom_series",
]
