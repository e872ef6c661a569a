"""Helpers for the io tests: cropping, pydicom's bundled files, and comparisons in world space."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from mednas.io import MedImage


def crop(image: MedImage, start: tuple[int, int, int], size: tuple[int, int, int]) -> MedImage:
    """Cut a box out of a 3D image, moving the affine's origin to the box's first voxel."""
    slices = tuple(slice(s, s + n) for s, n in zip(start, size))
    affine = np.array(image.affine, dtype=float)
    affine[:3, 3] = (affine @ np.array([*start, 1.0]))[:3]
    return MedImage(np.ascontiguousarray(image.array[(slice(None), *slices)]), affine, dict(image.meta))


def pydicom_file(name: str) -> Path:
    """Path of a file bundled with pydicom or pydicom-data; skips when it is not installed."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available (pip install pydicom-data)")
    return Path(path)


def canonical(image: MedImage) -> tuple[np.ndarray, np.ndarray]:
    """Flip/permute a 3D image to the closest RAS voxel order (nibabel), so grids that list the same voxels
    in a different order compare equal."""
    import nibabel as nib

    nii = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(image.array[0]), np.asarray(image.affine)))
    return np.asarray(nii.dataobj), np.asarray(nii.affine)


def sorted_corners(image: MedImage) -> np.ndarray:
    """World corners as a set (rows sorted), independent of voxel order."""
    corners = image.corners_world()
    return corners[np.lexsort(corners.T[::-1])]


def assert_same_world_image(actual: MedImage, expected: MedImage, *, atol_mm: float = 0.01) -> None:
    """Same voxel values at the same world positions, whatever the voxel order."""
    np.testing.assert_allclose(sorted_corners(actual), sorted_corners(expected), atol=atol_mm, rtol=0)
    actual_values, actual_affine = canonical(actual)
    expected_values, expected_affine = canonical(expected)
    np.testing.assert_allclose(actual_affine, expected_affine, atol=atol_mm, rtol=0)
    np.testing.assert_array_equal(actual_values, expected_values)


def voxel_world(image: MedImage, index: tuple[int, ...]) -> np.ndarray:
    """World position (RAS mm) of one voxel."""
    return (np.asarray(image.affine) @ np.array([*index, *([0] * (3 - len(index))), 1.0]))[:3]


def all_corner_indices(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Index tuples of the corner voxels of a grid."""
    return list(itertools.product(*[(0, n - 1) for n in shape]))
