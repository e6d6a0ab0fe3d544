"""The one image loader: `segment`, every dataset reader and the tool server's uploads decode 2-D
images here, so the same file gives the same pixels everywhere.

- Size is read from the file header and checked BEFORE any pixel is decoded: at most
  ``$MEDSEG_AGENT_MAX_IMAGE_PIXELS`` pixels (default 50 megapixels; decompression bombs cost
  nothing), at least 2 pixels per side (what every segmentation tool needs).
- Intensities go through :mod:`medseg_agent.io.intensity`: 8-bit images unchanged, CT (by modality
  or an explicit window) windowed, everything else (16-bit, float) stretched between its 0.5 and
  99.5 percentiles of finite values; NaN shows as the darkest value, +/-inf as white/black. An image
  with no finite value, or a CT window that leaves no contrast at all, is refused.
- Every failure is an :class:`ImageLoadError` naming the file and the problem in one line.

Decoders: tifffile for TIFF (Pillow when tifffile would need imagecodecs), numpy for ``.npy``,
nibabel for NIfTI, pydicom for DICOM, Pillow for everything else.
"""

from __future__ import annotations

import io
import os
import re
import struct
import tokenize
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .intensity import DEFAULT_CT_WINDOW, WindowSpec, ensure_rgb_uint8, is_ct, resolve_window, to_display_rgb

MAX_PIXELS_ENV = "MEDSEG_AGENT_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 50_000_000
MIN_SIDE = 2  # the tools need at least 2x2 pixels

_NPY_MAGIC = b"\x93NUMPY"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_JPEG_MAGIC = b"\xff\xd8\xff"
# What the decoders raise for bad bytes (beyond their own error classes, added per decoder).
_DATA_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    RecursionError,
    zlib.error,
    struct.error,
    tokenize.TokenError,
)

# tifffile turns damaged tag values into numbers of the wrong kind and computes with them.
_TIFF_ERRORS = (*_DATA_ERRORS, TypeError, ZeroDivisionError, IndexError, KeyError)


class ImageLoadError(OSError):
    """An image (or mask) file that cannot be used; ``str()`` is one line naming the file."""

    def __init__(self, source: str | Path, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = str(source)
        self.problem = problem


class ImageNotFoundError(ImageLoadError, FileNotFoundError):
    """The image file does not exist."""


@dataclass(frozen=True)
class EncodedImage:
    """Image bytes that are not (yet) a file, e.g. an upload; ``name`` is what errors call it."""

    data: bytes
    name: str = "uploaded image"


ImageSource = str | Path | EncodedImage


@dataclass(frozen=True)
class ImageLimits:
    """Sizes accepted before decoding. ``max_pixels=None`` reads ``$MEDSEG_AGENT_MAX_IMAGE_PIXELS``
    (default :data:`DEFAULT_MAX_PIXELS`); ``max_side`` is an extra per-side cap (the server's)."""

    max_pixels: int | None = None
    max_side: int | None = None
    min_side: int = MIN_SIDE


def max_image_pixels() -> int:
    """The pixel limit in force: ``$MEDSEG_AGENT_MAX_IMAGE_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`."""
    return limit_from_env(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS, "pixels")


def limit_from_env(name: str, default: int, unit: str) -> int:
    """A size limit a user may raise through the environment: ``$name``, or ``default`` when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name}={raw!r} is not a positive whole number of {unit}")
    return value


# --------------------------------------------------------------------------- public entry points


def read_image_array(source: ImageSource, *, limits: ImageLimits | None = None) -> np.ndarray:
    """The raw pixel array of a 2-D image file or bytes, shape (H, W) or (H, W, C), no intensity
    mapping; size and layout checked from the header first."""
    name = _name_of(source)
    limits = limits or ImageLimits()
    try:
        max_pixels = limits.max_pixels if limits.max_pixels is not None else max_image_pixels()
    except ValueError as exc:
        raise ImageLoadError(name, f"cannot apply the pixel limit: {exc}") from None

    hint = f"; raise it with {MAX_PIXELS_ENV} if the image is genuine" if limits.max_pixels is None else ""
    check = _SizeCheck(name, limits, max_pixels, hint)
    kind = _kind_of(source)
    with _opened(source) as stream:
        array = _DECODERS[kind](stream, name, check)
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[2] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # channel-first TIFF
    check(array.shape)  # the decoded layout too (channel-first moved, NIfTI squeezed)
    if array.dtype.kind not in "biuf":
        raise ImageLoadError(name, f"pixel type {array.dtype} is not an image intensity")
    return array


def load_image(
    source: ImageSource,
    modality: str | None = None,
    window: WindowSpec | None = None,
    *,
    limits: ImageLimits | None = None,
) -> np.ndarray:
    """A display-ready, writable (H, W, 3) uint8 image: 8-bit unchanged, CT windowed, other
    intensities percentile-stretched (see the module docstring)."""
    name = _name_of(source)
    array = read_image_array(source, limits=limits)
    if array.dtype.kind == "f" and not np.isfinite(array).any():
        raise ImageLoadError(name, "no finite pixel value (every pixel is NaN or infinite)")
    if array.dtype == np.uint8 and window is None:
        image = ensure_rgb_uint8(array)
    else:
        try:
            image = to_display_rgb(array, modality, window=window)
        except ValueError as exc:  # an unknown window preset, a bad width
            raise ImageLoadError(name, str(exc)) from None
        _refuse_flat_window(name, array, image, modality, window)
    return image if image.flags.writeable else image.copy()


def load_mask(source: ImageSource, label: int | None = None, *, limits: ImageLimits | None = None) -> np.ndarray:
    """A (H, W) bool mask: non-zero (or ``== label``) pixels; colour masks use the max over
    channels; JPEG masks are thresholded at half range against compression noise."""
    array = read_image_array(source, limits=limits)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = array[:, :, :3].max(axis=2)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if label is not None:
        return array == label
    if _kind_of(source) == "jpeg":
        return array > (127 if array.dtype == np.uint8 else array.max() / 2)
    return array > 0


# --------------------------------------------------------------------------- checks


def _plane_of(name: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """(H, W) of an image array shape, accepting (H, W), (H, W, C<=4) and channel-first (C, H, W)."""
    dims = tuple(int(d) for d in shape)
    if len(dims) == 2:
        return dims[0], dims[1]
    if len(dims) == 3 and dims[2] in (1, 3, 4):
        return dims[0], dims[1]
    if len(dims) == 3 and dims[0] in (3, 4):
        return dims[1], dims[2]
    raise ImageLoadError(name, f"expected a 2-D image, (H, W) or (H, W, channels), got an array of shape {dims}")


@dataclass(frozen=True)
class _SizeCheck:
    """The limits applied to an array shape read from a header (called before decoding)."""

    name: str
    limits: ImageLimits
    max_pixels: int
    hint: str  # how to raise the pixel limit, when it came from the environment

    def __call__(self, shape: tuple[int, ...]) -> None:
        height, width = _plane_of(self.name, shape)
        side = self.limits.min_side
        if height < side or width < side:
            raise ImageLoadError(self.name, f"image is {height}x{width} pixels; at least {side}x{side} are needed")
        if self.limits.max_side is not None and max(height, width) > self.limits.max_side:
            raise ImageLoadError(
                self.name, f"image is {height}x{width}; at most {self.limits.max_side} pixels per side are accepted"
            )
        if height * width > self.max_pixels:
            raise ImageLoadError(
                self.name, f"image is {height}x{width} ({height * width:,} pixels), {self.above_limit}"
            )

    @property
    def above_limit(self) -> str:
        return f"above the limit of {self.max_pixels:,} pixels{self.hint}"


def _refuse_flat_window(
    name: str, raw: np.ndarray, image: np.ndarray, modality: str | None, window: WindowSpec | None
) -> None:
    """A CT window that turns a non-flat image into one flat colour hides everything: say so rather
    than hand a blank image to a policy (typically stored values that are not Hounsfield units)."""
    if raw.ndim != 2 and not (raw.ndim == 3 and raw.shape[2] == 1):
        return  # colour images are never windowed
    if window is None and not is_ct(modality):
        return
    first = image[0, 0, 0]
    if not np.all(image == first):
        return
    finite = raw[np.isfinite(raw)] if raw.dtype.kind == "f" else raw
    lo, hi = float(finite.min()), float(finite.max())
    if lo == hi:
        return
    width, level = resolve_window(window if window is not None else DEFAULT_CT_WINDOW)
    shown = "white" if first == 255 else "black"
    raise ImageLoadError(
        name,
        f"the CT window W{width:g} L{level:g} (values {level - width / 2:g}..{level + width / 2:g}) shows every "
        f"pixel {shown}: the stored values ({lo:g}..{hi:g}) do not look like Hounsfield units; store HU or "
        "give a window that matches the stored scale",
    )


# --------------------------------------------------------------------------- sources


def _name_of(source: ImageSource) -> str:
    return source.name if isinstance(source, EncodedImage) else str(source)


def _kind_of(source: ImageSource) -> str:
    """Which decoder: by extension for files (as the dataset readers always did), by magic bytes
    for uploads."""
    if isinstance(source, EncodedImage):
        head = source.data[:132]
        if head.startswith(_NPY_MAGIC):
            return "npy"
        if head.startswith(_TIFF_MAGICS):
            return "tiff"
        if head[128:132] == b"DICM":
            return "dicom"
        return "jpeg" if head.startswith(_JPEG_MAGIC) else "pillow"
    low = Path(source).name.lower()
    if low.endswith((".tif", ".tiff")):
        return "tiff"
    if low.endswith(".npy"):
        return "npy"
    if low.endswith((".nii", ".nii.gz")):
        return "nifti"
    if low.endswith(".dcm"):
        return "dicom"
    return "jpeg" if low.endswith((".jpg", ".jpeg")) else "pillow"


@contextmanager
def _opened(source: ImageSource) -> Iterator[BinaryIO]:
    """A binary stream over a file or bytes; a missing file is :class:`ImageNotFoundError`."""
    if isinstance(source, EncodedImage):
        if not source.data:
            raise ImageLoadError(source.name, "the image is empty (0 bytes)")
        yield io.BytesIO(source.data)
        return
    path = Path(source)
    try:
        exists, is_file = path.exists(), path.is_file()
    except OSError as exc:  # a name too long for the file system, say
        raise ImageLoadError(path, f"cannot open: {exc.strerror or exc}") from None
    if not exists:
        raise ImageNotFoundError(path, "file not found")
    if not is_file:
        raise ImageLoadError(path, "not a file")
    try:
        stream = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise ImageLoadError(path, f"cannot open: {exc.strerror or exc}") from None
    with stream:
        yield stream


# --------------------------------------------------------------------------- decoders


def _unreadable(name: str, what: str, exc: BaseException) -> ImageLoadError:
    """``not a readable PNG image (the decoder's first line)``: what failed, and the library's why."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ImageLoadError(name, f"{what} ({detail[:200]})")


def _decode_pillow(stream: BinaryIO, name: str, check: _SizeCheck) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(stream) as im:
            check((im.height, im.width))
            im.load()
            if im.mode in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("LA", "PA"):
                im = im.convert("L")
            return np.asarray(im)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(name, "not a readable image file (PNG, JPEG, TIFF, BMP, .npy, NIfTI or DICOM)") from None
    except Image.DecompressionBombError as exc:  # Pillow's own guard, raised while reading the header
        announced = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(announced.group(1)) if announced else None
        if pixels is not None and pixels > check.max_pixels:
            raise ImageLoadError(name, f"the header announces {pixels:,} pixels, {check.above_limit}") from None
        raise ImageLoadError(
            name,
            f"the header announces {'too many' if pixels is None else f'{pixels:,}'} pixels, more than Pillow decodes "
            f"({2 * Image.MAX_IMAGE_PIXELS:,}: its decompression-bomb guard)",
        ) from None
    except _DATA_ERRORS as exc:
        raise _unreadable(name, "not a readable image", exc) from None


def _decode_tiff(stream: BinaryIO, name: str, check: _SizeCheck) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(stream) as tif:
            if not tif.series:
                raise ImageLoadError(name, "the TIFF file holds no image")
            check(tuple(tif.series[0].shape))
            return tif.asarray()
    except ImageLoadError:
        raise
    except _TIFF_ERRORS as exc:
        if "imagecodecs" in str(exc):  # a compression tifffile cannot decode on its own: Pillow can
            stream.seek(0)
            return _decode_pillow(stream, name, check)
        raise _unreadable(name, "not a readable TIFF image", exc) from None


def _decode_npy(stream: BinaryIO, name: str, check: _SizeCheck) -> np.ndarray:
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    except _DATA_ERRORS as exc:
        raise _unreadable(name, "not a valid .npy array", exc) from None
    if dtype.hasobject:
        raise ImageLoadError(name, f".npy array of {dtype} holds Python objects, not pixels")
    check(tuple(shape))
    start = stream.tell()
    available = stream.seek(0, io.SEEK_END) - start
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if available != expected:
        raise ImageLoadError(name, f".npy array of shape {shape} needs {expected} bytes of data, got {available}")
    stream.seek(start)
    array = np.frombuffer(stream.read(expected), dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return np.array(array, order="C")


def _decode_nifti(stream: BinaryIO, name: str, check: _SizeCheck) -> np.ndarray:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img = nib.load(name)  # nibabel opens by name (it needs the suffix); the header is read lazily
        check(tuple(d for d in img.shape if d != 1) or (1, 1))
        return np.squeeze(np.asanyarray(img.dataobj))
    except ImageLoadError:
        raise
    except (*_DATA_ERRORS, ImageFileError) as exc:
        raise _unreadable(name, "not a readable NIfTI image", exc) from None


def _decode_dicom(stream: BinaryIO, name: str, check: _SizeCheck) -> np.ndarray:
    import pydicom
    from pydicom.errors import BytesLengthException, InvalidDicomError

    # pydicom parses an element when it is first used, so a damaged one fails wherever it is read:
    # a value of the wrong length, an unknown value representation (NotImplementedError), a number
    # that is not one; decoding pixels also fails on a missing codec (RuntimeError) or a missing
    # pixel tag (AttributeError)
    damaged = (*_DATA_ERRORS, InvalidDicomError, BytesLengthException, NotImplementedError)
    try:
        ds = pydicom.dcmread(stream)  # pixel data is only decompressed by .pixel_array below
    except damaged as exc:
        raise _unreadable(name, "not a readable DICOM file", exc) from None
    try:
        if "PixelData" not in ds:
            raise ImageLoadError(name, "the DICOM file holds no pixel data")
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        shape = (int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0))
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    except ImageLoadError:
        raise
    except damaged as exc:
        raise _unreadable(name, "a damaged DICOM header", exc) from None
    check(((frames,) if frames > 1 else ()) + shape + ((samples,) if samples > 1 else ()))
    try:
        pixels = ds.pixel_array
    except (*damaged, RuntimeError, AttributeError) as exc:
        raise _unreadable(name, "undecodable DICOM pixel data", exc) from None
    return pixels.astype(np.float32) * slope + intercept


_DECODERS: dict[str, Callable[[BinaryIO, str, _SizeCheck], np.ndarray]] = {
    "pillow": _decode_pillow,
    "jpeg": _decode_pillow,
    "tiff": _decode_tiff,
    "npy": _decode_npy,
    "nifti": _decode_nifti,
    "dicom": _decode_dicom,
}
