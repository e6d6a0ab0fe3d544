from __future__ import annotations

import pytest

from medseg_agent.models.checkpoint import CheckpointError, checkpoint_reference, load_vision_language_checkpoint


def test_checkpoint_names_are_folders_or_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "sft").mkdir(parents=True)
    assert checkpoint_reference("runs/sft", "train sft") == str(tmp_path / "runs" / "sft")
    assert checkpoint_reference("Qwen/Qwen3-VL-2B-Instruct", "train sft") == "Qwen/Qwen3-VL-2B-Instruct"
    for missing in ("runs/sft/final", "./final", str(tmp_path / "nowhere"), "~/no-such-checkpoint"):
        with pytest.raises(CheckpointError, match=r"train sft: checkpoint folder .* does not exist"):
            checkpoint_reference(missing, "train sft")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"model\.safetensors is a file; give the folder that holds config"):
        checkpoint_reference(tmp_path / "model.safetensors", "hf policy")
    with pytest.raises(CheckpointError, match="no checkpoint given"):
        checkpoint_reference(" ", "hf policy")


def test_a_folder_that_holds_no_checkpoint_is_named_with_who_wanted_it(tmp_path):
    with pytest.raises(CheckpointError, match=rf"train grpo: cannot load a vision-language checkpoint from {tmp_path}"):
        load_vision_language_checkpoint(tmp_path, "train grpo")
