"""Fixtures for the io tests: small crops of real volumes, read once per session."""

from __future__ import annotations

import pytest

from mednas.io import MedImage, read_image
from tests._shared_data import shared_file
from tests.io._helpers import crop


@pytest.fixture(scope="session")
def lung1() -> MedImage:
    """pyradiomics lung1 CT (512 x 512 x 48, LPS, int16 HU), read once."""
    return read_image(shared_file("pyradiomics", "lung1_image.nrrd"))


@pytest.fixture(scope="session")
def lung_crop(lung1: MedImage) -> MedImage:
    """A 64 x 56 x 12 box of lung1 through the lesion region: real CT values, cheap to write as DICOM."""
    return crop(lung1, (190, 330, 26), (64, 56, 12))


@pytest.fixture(scope="session")
def brain1() -> MedImage:
    """pyradiomics brain1 MR (256 x 256 x 25, LPS with a negative y direction)."""
    return read_image(shared_file("pyradiomics", "brain1_image.nrrd"))


@pytest.fixture(scope="session")
def brain_crop(brain1: MedImage) -> MedImage:
    """A 72 x 64 x 10 box of brain1 through the tumour, keeping its negative y direction."""
    return crop(brain1, (150, 80, 8), (72, 64, 10))
