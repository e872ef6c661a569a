"""Datasets: layouts -> cases with salted patient names, patient-grouped splits, preprocessing and the proxy cache."""

from __future__ import annotations

from mednas.data._cases import Case, Dataset, default_cache_root, hash_id, load_dataset, new_salt
from mednas.data._fingerprint import (
    compute_fingerprint,
    describe_case,
    fingerprint_hash,
    pixel_hash,
    suggest_normalize,
    suggest_shapes,
)
from mednas.data._layouts import load_layout
from mednas.data._layouts_base import LAYOUTS, BaseLayout, dataset_from_entries, list_layouts, register_layout
from mednas.data._plan import (
    PREPROCESSING,
    DataPlan,
    TestSplitAccessError,
    check_families,
    decide_preprocessing,
    plan_data,
    read_or_create_salt,
    recorded_preprocessing,
    unsupported_families,
)
from mednas.data._prepare import (
    ArrayData,
    Preprocessing,
    file_digest,
    load_arrays,
    load_case,
    normalize_transform,
    prepare_case,
)
from mednas.data._reveal import read_revealed, reveal_splits
from mednas.data._splits import (
    check_duplicates,
    check_splits,
    describe_duplicates,
    find_duplicates,
    make_folds,
    make_splits,
    splits_hash,
)
from mednas.data._synth import synthesise
from mednas.data._validate import BadCase, ValidationReport, validate_cases, validate_dataset

__all__ = [
    "PREPROCESSING",
    "BaseLayout",
    "LAYOUTS",
    "dataset_from_entries",
    "list_layouts",
    "register_layout",
    "ArrayData",
    "BadCase",
    "Case",
    "DataPlan",
    "Dataset",
    "Preprocessing",
    "TestSplitAccessError",
    "ValidationReport",
    "check_duplicates",
    "check_families",
    "decide_preprocessing",
    "check_splits",
    "compute_fingerprint",
    "describe_case",
    "describe_duplicates",
    "find_duplicates",
    "fingerprint_hash",
    "default_cache_root",
    "file_digest",
    "hash_id",
    "load_arrays",
    "load_case",
    "load_dataset",
    "load_layout",
    "make_folds",
    "make_splits",
    "new_salt",
    "normalize_transform",
    "pixel_hash",
    "plan_data",
    "prepare_case",
    "read_or_create_salt",
    "recorded_preprocessing",
    "read_revealed",
    "reveal_splits",
    "splits_hash",
    "suggest_normalize",
    "suggest_shapes",
    "synthesise",
    "unsupported_families",
    "validate_cases",
    "validate_dataset",
]
