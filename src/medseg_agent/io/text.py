"""Reading the small text files people write and pass around (reward configs, recipes, records).

Every way such a read fails (no file, a folder, no permission, bytes that are not UTF-8) is one
:class:`TextFileError` naming the file, so commands print a sentence instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class TextFileError(ValueError):
    """A text file that cannot be read; ``str()`` names the file and the reason."""


def read_text_file(path: str | Path, what: str = "file") -> str:
    """The file's text; a byte-order mark (editors on Windows write one) is dropped.

    ``what`` names the file's role in the messages: ``"reward config"`` -> "reward config x.yaml does
    not exist".
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TextFileError(f"{what} {path} does not exist") from None
    except OSError as exc:  # a folder, no permission, a name too long
        raise TextFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TextFileError(
            f"{what} {path} is not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}); save it as UTF-8"
        ) from None
