from __future__ import annotations

import pytest

from medseg_agent.io.text import TextFileError, read_text_file


def test_text_files_read_with_or_without_a_byte_order_mark(tmp_path):
    (tmp_path / "plain.yaml").write_bytes("weight: 0.5 # café\n".encode())
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + "weight: 0.5 # café\n".encode())
    assert read_text_file(tmp_path / "plain.yaml") == read_text_file(tmp_path / "bom.yaml") == "weight: 0.5 # café\n"


def test_every_failed_read_is_one_error_naming_the_file_and_its_role(tmp_path):
    (tmp_path / "latin1.yaml").write_bytes(b"site: abdom\xe9n\n")
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(TextFileError, match=r"^recipe .*latin1\.yaml is not UTF-8 text \(byte 11 is 0xe9\)"):
        read_text_file(tmp_path / "latin1.yaml", "recipe")
    with pytest.raises(TextFileError, match=r"^cannot read reward config .*folder\.yaml: Is a directory$"):
        read_text_file(tmp_path / "folder.yaml", "reward config")
    with pytest.raises(TextFileError, match=r"^file .*gone\.yaml does not exist$"):
        read_text_file(tmp_path / "gone.yaml")
