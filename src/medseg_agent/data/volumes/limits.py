"""How large a volume may be before it is read: checked from the header, since a gzip stream or a
DICOM series of a few megabytes can describe more voxels than the machine's memory holds."""

from __future__ import annotations

import math
from collections.abc import Sequence

from medseg_agent.io.images import limit_from_env

from .errors import VolumeError

MAX_VOXELS_ENV = "MEDSEG_AGENT_MAX_VOLUME_VOXELS"
#: 2**30 voxels: a 1024 x 1024 x 1024 volume, 4 GiB once read as float32.
DEFAULT_MAX_VOXELS = 1 << 30


def max_volume_voxels() -> int:
    """The voxel limit in force: ``$MEDSEG_AGENT_MAX_VOLUME_VOXELS`` or :data:`DEFAULT_MAX_VOXELS`."""
    return limit_from_env(MAX_VOXELS_ENV, DEFAULT_MAX_VOXELS, "voxels")


def check_voxel_count(shape: Sequence[int], name: str) -> None:
    """Refuse a volume over the voxel limit, or with a side of no voxels, naming it, before any voxel
    is read (nibabel takes a negative side from a damaged header as it is)."""
    size = "x".join(str(int(side)) for side in shape)
    if any(int(side) < 1 for side in shape):
        raise VolumeError(f"{name} describes a {size} volume: a side of fewer than 1 voxel means a damaged header")
    voxels, limit = math.prod(int(side) for side in shape), max_volume_voxels()
    if voxels > limit:
        raise VolumeError(
            f"{name} describes a {size} volume of {voxels:,} voxels, over the limit of {limit:,}; raise "
            f"{MAX_VOXELS_ENV} if the volume is genuine"
        )
