"""Build a small REAL demo dataset at run time from Debian / PyPI packages (no dataset hosts).

Sources (downloaded once into a cache folder, never into the repository):

- Debian package ``mricron-data``: the Colin27 T1 MRI (``ch2.nii.gz``), its brain-extracted version
  (``ch2bet.nii.gz``) and the AAL atlas drawn on it (``aal.nii.gz`` + ``aal.nii.txt``). Axial slices
  through the hippocampi, basal ganglia and thalami, shown radiologically, with AAL structures and
  the whole-brain mask as targets.
- PyPI wheel ``stardist==0.9.2``: one DSB 2018 fluorescence image with 125 hand-annotated nuclei
  (``stardist/data/images/img2d.tif`` + ``mask2d.tif``), read straight from the wheel (no
  TensorFlow). Crops centred on single nuclei ("the nucleus at the image centre") and crops with
  all nuclei as target.

The result is a BiomedParse folder (``test/`` + ``test_mask/``), readable with
:func:`medseg_agent.data.open_dataset`, plus ``README.txt`` (attribution) and ``demo_manifest.json``
(also a valid manifest for the manifest reader).

Where each job lives: fetching the packages in :mod:`.debian` and :mod:`.pypi` (shared download
helpers in :mod:`.downloads`, cache folders in :mod:`.locations`); building the samples in
:mod:`.brain_mri` and :mod:`.nuclei`; writing and reusing the dataset folder in :mod:`.build`.
"""

from .brain_mri import AAL_TARGETS, MRI_SLICES, WHOLE_BRAIN
from .build import DEMO_VERSION, MANIFEST_NAME, MARKER_NAME, build_demo_dataset, demo_summary, is_complete
from .debian import INSTALLED_TEMPLATES, MRICRON_FILES, MRICRON_PACKAGE, MRICRON_TEMPLATES, fetch_mricron_templates
from .locations import cache_root, default_demo_dir, downloads_dir
from .nuclei import ALL_NUCLEI, CENTRAL_NUCLEUS
from .pypi import STARDIST_MEMBERS, STARDIST_REQUIREMENT, fetch_stardist_images
from .reporting import DemoBuildError, Progress

__all__ = [
    "AAL_TARGETS",
    "ALL_NUCLEI",
    "CENTRAL_NUCLEUS",
    "DEMO_VERSION",
    "INSTALLED_TEMPLATES",
    "MANIFEST_NAME",
    "MARKER_NAME",
    "MRICRON_FILES",
    "MRICRON_PACKAGE",
    "MRICRON_TEMPLATES",
    "MRI_SLICES",
    "STARDIST_MEMBERS",
    "STARDIST_REQUIREMENT",
    "WHOLE_BRAIN",
    "DemoBuildError",
    "Progress",
    "build_demo_dataset",
    "cache_root",
    "default_demo_dir",
    "demo_summary",
    "downloads_dir",
    "fetch_mricron_templates",
    "fetch_stardist_images",
    "is_complete",
]
