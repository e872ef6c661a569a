"""The one image type every reader returns: voxels, world geometry, and metadata without identifying values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class MedImage:
    """A medical image in world coordinates.

    Args:
        array: Voxels, channel first: ``(C, X, Y)`` or ``(C, X, Y, Z)``. Axis order is the voxel index order
            that ``affine`` maps (nibabel's convention), so ``array[0, i, j, k]`` sits at ``affine @ [i, j, k, 1]``.
            For 2D images X runs along columns (left to right) and Y along rows (top to bottom), as MONAI does.
        affine: 4x4 voxel-to-world matrix in RAS+ millimetres (as nibabel reports it). 2D images get a 4x4 too.
        meta: Non-identifying metadata: ``modality``, ``format``, ``source`` (reader name), and reader-specific
            keys such as ``photometric`` or ``series_description``. Never patient names, IDs or dates.
    """

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return self.array.ndim - 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape without the channel axis."""
        return tuple(int(s) for s in self.array.shape[1:])

    @property
    def channels(self) -> int:
        """Number of channels."""
        return int(self.array.shape[0])

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm per spatial axis (column norms of the affine)."""
        norms = np.sqrt((np.asarray(self.affine)[:3, :3] ** 2).sum(axis=0))
        return tuple(float(v) for v in norms[: self.spatial_dims])

    @property
    def orientation(self) -> str:
        """Axis codes such as ``"RAS"`` or ``"LPS"`` (nibabel's ``aff2axcodes``)."""
        import nibabel as nib

        codes = nib.aff2axcodes(np.asarray(self.affine))
        return "".join(codes[: max(self.spatial_dims, 3)] if self.spatial_dims == 3 else codes[:2])

    def corners_world(self) -> np.ndarray:
        """World coordinates (mm) of the first and last voxel centres along every axis, ``(2**D, 3)``."""
        import itertools

        shape = self.spatial_shape + (1,) * (3 - self.spatial_dims)
        corners = np.array(list(itertools.product(*[(0, s - 1) for s in shape])), dtype=float)
        homog = np.c_[corners, np.ones(len(corners))]
        return (np.asarray(self.affine) @ homog.T).T[:, :3]
