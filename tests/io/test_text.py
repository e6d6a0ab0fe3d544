from __future__ import annotations

import codecs
import re

import pytest

from medseg_agent.io.text import TextFileError, read_text_file, yaml_value


def test_text_files_read_with_or_without_a_byte_order_mark(tmp_path):
    (tmp_path / "plain.yaml").write_bytes("weight: 0.5 # café\n".encode())
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + "weight: 0.5 # café\n".encode())
    assert read_text_file(tmp_path / "plain.yaml") == read_text_file(tmp_path / "bom.yaml") == "weight: 0.5 # café\n"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_with_a_byte_order_mark_are_read(tmp_path, encoding):
    text = "image\tmask\ttarget\nscan.png\tseg.png\tfémur\n"  # Excel's "Unicode text", PowerShell's >
    mark = {"utf-16": b"", "utf-16-be": codecs.BOM_UTF16_BE, "utf-32": b""}[encoding]
    (tmp_path / "rows.tsv").write_bytes(mark + text.encode(encoding))
    assert read_text_file(tmp_path / "rows.tsv") == text


def test_every_failed_read_is_one_error_naming_the_file_and_its_role(tmp_path):
    (tmp_path / "latin1.yaml").write_bytes(b"site: abdom\xe9n\n")
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(TextFileError, match=r"^recipe .*latin1\.yaml is not UTF-8 text \(byte 11 is 0xe9\)"):
        read_text_file(tmp_path / "latin1.yaml", "recipe")
    with pytest.raises(TextFileError, match=r"^cannot read reward config .*folder\.yaml: Is a directory$"):
        read_text_file(tmp_path / "folder.yaml", "reward config")
    with pytest.raises(TextFileError, match=r"^file .*gone\.yaml does not exist$"):
        read_text_file(tmp_path / "gone.yaml")
    (tmp_path / "cut.tsv").write_bytes(codecs.BOM_UTF16_LE + "a\tb\n".encode("utf-16-le")[:-1])
    with pytest.raises(TextFileError, match=r"^manifest .*cut\.tsv is not UTF-16 text \(byte 8 is 0x0a\)"):
        read_text_file(tmp_path / "cut.tsv", "manifest")


@pytest.mark.parametrize(
    ("text", "value"),
    [("3", 3), ("1e-4", 1e-4), ("-2.5E3", -2500.0), ("true", True), ("[1, 2]", [1, 2]), ("cosine", "cosine"),
     ("'[1'", "[1"), ("1e5x", "1e5x")],
)
def test_command_line_values_keep_their_types(text, value):
    assert yaml_value(text) == value and type(yaml_value(text)) is type(value)


@pytest.mark.parametrize("text", ["[1", "{a: ", '"unclosed', "!!python/object/apply:os.system ['ls']", "a: b: c"])
def test_a_value_yaml_cannot_read_names_itself(text):
    with pytest.raises(ValueError, match=rf"^{re.escape(repr(text))} is not a value YAML can read \(.+\); put text"):
        yaml_value(text)
