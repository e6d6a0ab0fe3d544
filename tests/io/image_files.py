"""Tiny hostile image files written by hand: a PNG whose header claims any size, and a valid PNG
that is small on disk but huge once decoded."""

from __future__ import annotations

import struct
import zlib


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_claiming(width: int, height: int, idat: bytes | None = None) -> bytes:
    """An 8-bit grayscale PNG whose IHDR says ``width`` x ``height``; by default its data is one row."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = idat if idat is not None else zlib.compress(bytes(width + 1))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def zero_png(width: int, height: int) -> bytes:
    """A VALID all-black PNG of ``width`` x ``height``: a few hundred KB that decode to W*H bytes."""
    stream = zlib.compressobj(1)
    idat = stream.compress(bytes((width + 1) * height)) + stream.flush()
    return png_claiming(width, height, idat)
