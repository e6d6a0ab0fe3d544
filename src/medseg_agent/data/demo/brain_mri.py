"""Brain MRI samples: axial Colin27 T1 slices, shown radiologically, with AAL structures and the
whole-brain mask as targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg_agent.io.intensity import gray_to_rgb, percentile_range, rescale_to_uint8

from ..volumes import canonical, display_slice
from .reporting import DemoBuildError

# Axial slices (index into the 1 mm RAS grid; MNI z = index - 71) and the AAL labels shown on each.
MRI_SLICES: dict[int, list[int]] = {
    56: [37, 38, -1],  # hippocampi + whole brain
    60: [37, 38],  # hippocampi
    68: [73, 74, -1],  # putamina + whole brain
    76: [77, 78, 73, 74, 71, 72],  # thalami, putamina, caudate nuclei
    80: [77, 78],  # thalami
    92: [71, 72, -1],  # caudate nuclei + whole brain
}
WHOLE_BRAIN = -1
AAL_TARGETS = {
    37: "left hippocampus",
    38: "right hippocampus",
    71: "left caudate nucleus",
    72: "right caudate nucleus",
    73: "left putamen",
    74: "right putamen",
    77: "left thalamus",
    78: "right thalamus",
    WHOLE_BRAIN: "whole brain",
}
MRI_MODALITY_TOKEN = "MRI-T1"
MRI_SITE = "head"


def brain_mri_images(src: Path) -> list[dict[str, Any]]:
    """One entry per slice of :data:`MRI_SLICES` (``image_id``, RGB ``image``, ``masks`` by target
    name, modality, site, source, spacing, meta), from the mricron templates folder ``src``."""
    import nibabel as nib
    from scipy import ndimage as ndi

    t1 = canonical(nib.load(str(src / "ch2.nii.gz")))
    aal = canonical(nib.load(str(src / "aal.nii.gz")))
    bet = canonical(nib.load(str(src / "ch2bet.nii.gz")))
    vol = np.asanyarray(t1.dataobj).astype(np.float32)
    labels = np.asanyarray(aal.dataobj).astype(np.int32)
    brain = np.asanyarray(bet.dataobj) > 0
    if vol.shape != labels.shape or vol.shape != brain.shape:
        raise DemoBuildError(f"mricron templates have different grids: {vol.shape}, {labels.shape}, {brain.shape}")
    lo, hi = percentile_range(vol)
    zooms = t1.header.get_zooms()[:3]
    spacing = [float(zooms[1]), float(zooms[0])]
    out = []
    for z, targets in MRI_SLICES.items():
        image = gray_to_rgb(rescale_to_uint8(display_slice(vol, z, "axial"), lo, hi))
        image_id = f"colin27_axial_z{z:03d}_{MRI_MODALITY_TOKEN}_{MRI_SITE}"
        masks = {}
        for lab in targets:
            if lab == WHOLE_BRAIN:
                m = ndi.binary_fill_holes(display_slice(brain, z, "axial"))
            else:
                m = display_slice(labels, z, "axial") == lab
            masks[AAL_TARGETS[lab]] = m
        out.append(
            {
                "image_id": image_id,
                "image": image,
                "masks": masks,
                "modality": "MRI",
                "modality_token": MRI_MODALITY_TOKEN,
                "site": MRI_SITE,
                "source": "Colin27 T1 + AAL (Debian mricron-data)",
                "spacing": spacing,
                "meta": {"axis": "axial", "slice_index": z, "mni_z_mm": float(t1.affine[2, 3] + z * zooms[2])},
            }
        )
    return out
