"""Image input and output: DICOM series and files, NIfTI, NRRD, PNG/JPEG/TIFF into one :class:`MedImage`.

Every reader returns voxels channel first, ``(C, X, Y[, Z])``, with a 4x4 RAS affine, and metadata free of
patient-identifying values; every file mednas writes is written atomically.

Example:
    >>> from mednas.io import read_image, list_series
    >>> image = read_image("study/ct/")  # doctest: +SKIP
    >>> image.array.shape, image.spacing, image.meta["modality"]  # doctest: +SKIP
    ((1, 512, 512, 120), (0.7, 0.7, 2.5), 'CT')
"""

from __future__ import annotations

from mednas.io._atomic import (
    atomic_dir,
    dumps_json,
    read_json,
    write_bytes,
    write_json,
    write_text,
    write_yaml,
)
from mednas.io._dicom import SeriesInfo, list_series, read_dicom_headers
from mednas.io._image import MedImage
from mednas.io._inspect import IMAGE_KEYS, format_summary, inspect_path, summarise_image
from mednas.io._nifti import write_nifti
from mednas.io._npz import member_reference, npz_arrays, parse_member, read_npz_member
from mednas.io._phi import IDENTIFYING_TAGS, patient_key, scrub
from mednas.io._readers import read_image

__all__ = [
    "IDENTIFYING_TAGS",
    "IMAGE_KEYS",
    "MedImage",
    "SeriesInfo",
    "atomic_dir",
    "dumps_json",
    "format_summary",
    "inspect_path",
    "list_series",
    "member_reference",
    "npz_arrays",
    "parse_member",
    "patient_key",
    "read_dicom_headers",
    "read_image",
    "read_json",
    "read_npz_member",
    "scrub",
    "summarise_image",
    "write_bytes",
    "write_json",
    "write_nifti",
    "write_text",
    "write_yaml",
]
