"""Reading the small texts people write: files they pass around (reward configs, recipes, records)
and ``KEY=VALUE`` settings typed on a command line.

Every way such a read fails (no file, a folder, no permission, bytes that are not UTF-8, a value
YAML cannot parse) is one error naming the file or the value, so commands print a sentence instead
of a traceback.
"""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Any

import yaml

#: YAML 1.1 reads 1e-4 (no dot) as a string; learning rates are written that way.
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
#: UTF-32 first: its little-endian mark begins with UTF-16's.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class TextFileError(ValueError):
    """A text file that cannot be read; ``str()`` names the file and the reason."""


def read_text_file(path: str | Path, what: str = "file") -> str:
    """The file's text: UTF-8, or UTF-16/32 with a byte-order mark (Excel's "Unicode text" and Windows
    PowerShell's ``>`` write UTF-16); the mark itself (which Windows editors also put before UTF-8) is
    dropped.

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
    encoding = next((name for mark, name in _BYTE_ORDER_MARKS if data.startswith(mark)), "utf-8-sig")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        kind = "UTF-8" if encoding == "utf-8-sig" else encoding.upper()
        raise TextFileError(
            f"{what} {path} is not {kind} text (byte {exc.start} is 0x{data[exc.start]:02x}); save it as UTF-8"
        ) from None


def read_json_object(path: str | Path, what: str = "file") -> dict[str, Any] | None:
    """The JSON object a small file holds (settings, an index of datasets); None when there is no such
    file, :class:`TextFileError` naming it when it is damaged or holds something else."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(read_text_file(path, what))
    except json.JSONDecodeError as exc:
        raise TextFileError(f"{what} {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TextFileError(f"{what} {path} holds a JSON {type(data).__name__}, not an object")
    return data


def yaml_value(text: str) -> Any:
    """A value typed on a command line, with YAML's types: ``3`` and ``1e-4`` are numbers, ``true``
    a bool, ``[1, 2]`` a list, ``cosine`` text; ``ValueError`` naming the text when YAML cannot read it."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        raise ValueError(f"{text!r} is not a value YAML can read ({problem}); put text in quotes") from None
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        return float(value)
    return value
