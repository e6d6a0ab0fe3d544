"""The one error of the volume readers, and what the file readers under them raise."""

from __future__ import annotations

import struct
import zlib


class VolumeError(ValueError):
    """A volume or label volume that cannot be used (reported as a skipped case)."""


def read_errors() -> tuple[type[BaseException], ...]:
    """What nibabel and pydicom raise for a bad or truncated file: reported as a skipped case. A
    TypeError, AttributeError or KeyError is a bug in our code and must surface, so none is here.
    pydicom parses an element when it is first used, so a damaged one fails there: a value of the
    wrong length (BytesLengthException) or an unknown value representation (NotImplementedError).
    nibabel checks a header when the data is read (HeaderDataError: an unknown data type code, a data
    offset inside the header) and an affine when the volume is reoriented (OrientationError: a damaged
    affine that drops an axis)."""
    from nibabel.filebasedimages import ImageFileError
    from nibabel.orientations import OrientationError
    from nibabel.spatialimages import HeaderDataError
    from pydicom.errors import BytesLengthException, InvalidDicomError

    return (OSError, ValueError, EOFError, zlib.error, struct.error, ImageFileError, HeaderDataError,
            OrientationError, InvalidDicomError, BytesLengthException, NotImplementedError)
