"""The verl integration on CPU: tools through verl's interface, the reward entry point with verl's
calling convention, RL rows through RLHFDataset, a whole agent-loop rollout, and the launch config."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

pytest.importorskip("verl")

from verl.experimental.agent_loop.tool_agent_loop import AgentData  # noqa: E402
from verl.tools.tool_registry import initialize_tools_from_config  # noqa: E402

from medseg_agent.environment.record import TrajectoryRecord  # noqa: E402
from medseg_agent.rewards import score_record  # noqa: E402
from medseg_agent.training.verl.dataset import rl_row, write_rl_parquet  # noqa: E402
from medseg_agent.training.verl.episodes import (  # noqa: E402
    RECORD_FIELD,
    STORE,
    EpisodeSpec,
    EpisodeSpecError,
)
from medseg_agent.training.verl.launch import (  # noqa: E402
    RLLaunchOptions,
    compose_verl_config,
    prepare_run,
    shipped_config,
    tool_config,
    write_tool_config,
)
from medseg_agent.training.verl.reward_fn import compute_score  # noqa: E402
from medseg_agent.vocabulary.sample import Sample
from medseg_agent.vocabulary.stop import StopReason

BOX = '<tool_call>\n{"name": "add_bbox", "arguments": {"bbox_2d": [300, 250, 700, 780]}}\n</tool_call>'
POINT = (
    '<tool_call>\n{"name": "add_point", "arguments": {"point_2d": [500, 500], "point_type": "positive"}}\n</tool_call>'
)
STOP = '<tool_call>\n{"name": "stop_action", "arguments": {}}\n</tool_call>'


def disc(h: int = 96, w: int = 128, centre=(64, 48), radius: int = 22, sample_id: str = "disc") -> Sample:
    yy, xx = np.mgrid[:h, :w]
    mask = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2
    image = np.clip(60 + 120 * mask + np.random.default_rng(0).normal(0, 8, (h, w)), 0, 255).astype(np.uint8)
    return Sample(np.stack([image] * 3, 2), mask, "bright disc", "CT", "synthetic", sample_id)


@pytest.fixture
def tools(tmp_path: Path) -> dict:
    path = write_tool_config(tmp_path / "tools.yaml", {"tool": "classic", "max_turns": 3})
    loaded = initialize_tools_from_config(str(path))  # verl's own registry
    return {tool.name: tool for tool in loaded}


def agent_data(row: dict, request_id: str, text: str = "<think>a box around the disc</think>") -> AgentData:
    return AgentData(
        messages=[{"role": "assistant", "content": text}],
        image_data=[],
        video_data=None,
        audio_data=None,
        mm_processor_kwargs=None,
        metrics={},
        request_id=request_id,
        tools_kwargs=row["extra_info"]["tools_kwargs"],
    )


async def call(tool, data: AgentData, parameters: dict):
    """One tool call exactly as ToolAgentLoop._call_tool makes it: create, execute, (reward), release."""
    instance_id, created = await tool.create(create_kwargs={})
    response, step_reward, metrics = await tool.execute(instance_id, parameters, agent_data=data)
    reward = await tool.calc_reward(instance_id)
    await tool.release(instance_id)
    return response, step_reward, metrics, reward


def test_tools_through_verls_interface(tools):
    row = rl_row(disc(), 0)
    data = agent_data(row, "traj-1")

    async def episode():
        box = await call(tools["add_bbox"], data, {"bbox_2d": [300, 250, 700, 780]})
        bad = await call(tools["add_point"], data, {"point_2d": [500]})
        point = await call(tools["add_point"], data, {"point_2d": [500, 500], "point_type": "positive"})
        stop = await call(tools["stop_action"], data, {})
        after = await call(tools["add_point"], data, {"point_2d": [10, 10], "point_type": "negative"})
        return box, bad, point, stop, after

    box, bad, point, stop, after = asyncio.run(episode())
    response, gain, metrics, reward = box
    assert len(response.image) == 1
    width, height = response.image[0].size
    assert width % 32 == 0 and height % 32 == 0  # resized for the vision tower (patch 16 x merge 2)
    assert metrics["iou"] > 0.5 and gain == pytest.approx(metrics["iou"])
    assert "action(s) left" in response.text
    assert bad[0].image is None and "could not be executed" in bad[0].text and bad[1] == 0.0  # no overlay
    assert stop[0].image is None and stop[0].text == "The episode is finished; the mask is final."
    assert "over" in after[0].text  # the episode ended with stop_action

    record = TrajectoryRecord.model_validate_json(data.extra_fields[RECORD_FIELD])
    assert [t.action.name if t.action else None for t in record.turns] == [
        "add_bbox",
        None,
        "add_point",
        "stop_action",
    ]
    assert record.stop_reason is StopReason.STOP_ACTION and record.num_errors == 1
    assert record.turns[0].reasoning == "a box around the disc"  # the model's own text is kept
    assert stop[3] == pytest.approx(score_record(record, "medseg").total)  # calc_reward
    STORE.pop("traj-1")


def test_trajectories_keep_separate_episodes(tools):
    rows = [rl_row(disc(centre=(40, 40), radius=15), 0), rl_row(disc(), 1)]
    datas = [agent_data(rows[0], "a"), agent_data(rows[1], "b")]

    async def both():
        boxes = [{"bbox_2d": [150, 200, 470, 650]}, {"bbox_2d": [300, 250, 700, 780]}]
        await asyncio.gather(*(call(tools["add_bbox"], d, b) for d, b in zip(datas, boxes, strict=True)))
        return await asyncio.gather(*(call(tools["stop_action"], d, {}) for d in datas))

    asyncio.run(both())
    records = [TrajectoryRecord.model_validate_json(d.extra_fields[RECORD_FIELD]) for d in datas]
    assert [len(r.turns) for r in records] == [2, 2]
    assert records[0].gt_mask_rle != records[1].gt_mask_rle
    assert all(r.final_metrics["iou"] > 0.4 for r in records)
    STORE.pop("a"), STORE.pop("b")


def test_reward_entry_point_with_verls_loader(tools):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {
                    "path": "pkg://medseg_agent.training.verl.reward_fn",
                    "name": "compute_score",
                    "reward_kwargs": {"reward": "medsam_agent"},
                }
            }
        }
    )
    reward_fn = get_custom_reward_fn(config)
    row = rl_row(disc(), 0)
    data = agent_data(row, "traj-r")

    async def episode():
        await call(tools["add_bbox"], data, {"bbox_2d": [300, 250, 700, 780]})
        await call(tools["stop_action"], data, {})

    asyncio.run(episode())
    STORE.pop("traj-r")
    # The naive reward manager's call: keywords, extra_info = row extra_info + tool extra_fields.
    extra_info = {**row["extra_info"], **data.extra_fields, "num_turns": 5}
    result = reward_fn(
        data_source=row["data_source"],
        solution_str="...",
        ground_truth=row["reward_model"]["ground_truth"],
        extra_info=extra_info,
    )
    record = TrajectoryRecord.model_validate_json(data.extra_fields[RECORD_FIELD])
    assert result["score"] == pytest.approx(score_record(record, "medsam_agent").total)
    assert result["format_medsam"] == 1.0 and 0.0 < result["score"] <= 1.0
    # A rollout that never called a tool: same keys (verl stacks them), scored as an empty episode.
    empty = reward_fn(
        data_source=row["data_source"],
        solution_str="no tools",
        ground_truth=row["reward_model"]["ground_truth"],
        extra_info=dict(row["extra_info"]),
    )
    assert set(empty) == set(result) and empty["score"] == 0.0


def test_reward_overrides_reach_the_reward():
    row = rl_row(disc(), 0)
    gt = row["reward_model"]["ground_truth"]
    base = compute_score("medseg_agent", "", gt, {}, reward="medseg", overrides=["terms.format_valid=0.5"])
    assert base["score"] == 0.0  # no replies: format_valid is 0 and the mask is empty
    with pytest.raises(ValueError, match="unknown term"):
        compute_score("medseg_agent", "", gt, {}, reward="medseg", overrides=["terms.nonsense=1"])


def test_rl_rows_through_rlhf_dataset(tiny_qwen, tmp_path):
    from omegaconf import OmegaConf
    from PIL import Image
    from transformers import AutoProcessor
    from verl.utils.dataset.rl_dataset import RLHFDataset

    processor = AutoProcessor.from_pretrained(tiny_qwen)
    rows = [rl_row(disc(), 0), rl_row(disc(centre=(40, 40), sample_id="d2"), 1, image_mode="files", image_dir=tmp_path)]
    write_rl_parquet(rows, tmp_path / "train.parquet")
    dataset = RLHFDataset(
        str(tmp_path / "train.parquet"),
        processor.tokenizer,
        OmegaConf.create({"image_key": "images", "filter_overlong_prompts": False, "cache_dir": str(tmp_path)}),
        processor=processor,
    )
    assert len(dataset) == 2
    item = dataset[1]
    system, user = item["raw_prompt"]
    assert "<tools>" not in system["content"]  # the chat template lists the tools from the tool YAML
    assert user["content"][0]["type"] == "image" and isinstance(user["content"][0]["image"], Image.Image)
    assert "bright disc" in user["content"][1]["text"]
    assert item["agent_name"] == "medseg_agent" and item["index"] == 1
    create = item["tools_kwargs"]["medseg_episode"]["create_kwargs"]
    assert Path(create["image_path"]).is_file() and create["gt_mask_rle"]["size"] == [96, 128]


class ScriptedServer:
    """Stands in for the rollout engine (vLLM/SGLang): returns the next scripted reply as token ids."""

    def __init__(self, tokenizer, replies: list[str]) -> None:
        self.tokenizer, self.replies, self.images = tokenizer, replies, []

    async def generate(self, request_id, prompt_ids, sampling_params, image_data=None, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        self.images.append(len(image_data or []))
        text = self.replies[len(self.images) - 1] + "<|im_end|>"
        return TokenOutput(token_ids=self.tokenizer.encode(text, add_special_tokens=False), stop_reason="completed")


def run_loop(tiny_qwen: Path, tmp_path: Path, replies: list[str]):
    from omegaconf import OmegaConf
    from transformers import AutoProcessor
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from medseg_agent.training.verl.agent_loop import MedSegAgentLoop

    processor = AutoProcessor.from_pretrained(tiny_qwen)
    options = RLLaunchOptions(
        model=str(tiny_qwen), train_files=[str(tmp_path / "train.parquet")], val_files=[], out_dir=str(tmp_path)
    )
    overrides = prepare_run(options)
    overrides += [
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={write_tool_config(tmp_path / 'tools.yaml')}",
        "data.max_response_length=4096",
    ]
    config = compose_verl_config(overrides)
    write_rl_parquet([rl_row(disc(), 0, view_longest_side=64)], tmp_path / "train.parquet")
    data_config = OmegaConf.create(
        {"image_key": "images", "filter_overlong_prompts": False, "cache_dir": str(tmp_path)}
    )
    item = RLHFDataset(str(tmp_path / "train.parquet"), processor.tokenizer, data_config, processor=processor)[0]
    server = ScriptedServer(processor.tokenizer, replies)
    tools = initialize_tools_from_config(str(tmp_path / "tools.yaml"))

    async def rollout():  # verl builds the loop inside the worker's event loop
        loop = MedSegAgentLoop(
            trainer_config=DictConfigWrap(config),
            server_manager=server,
            tokenizer=processor.tokenizer,
            processor=processor,
            dataset_cls=RLHFDataset,
            data_config=DictConfigWrap(config.data),
            hf_model_type="qwen3_vl",
            tools=ToolListWrap(tools),
        )
        return await loop.run({"temperature": 1.0}, **{k: v for k, v in item.items() if k != "dummy_tensor"})

    return item, server, asyncio.run(rollout())


def test_agent_loop_rollout_end_to_end(tiny_qwen, tmp_path):
    item, server, output = run_loop(tiny_qwen, tmp_path, [BOX, POINT, STOP, "The disc is segmented."])
    assert server.images == [1, 2, 3, 3]  # each overlay joins the trajectory's images; stop adds none
    mask = np.array(output.response_mask)
    assert mask.min() == 0 and mask.max() == 1  # tool replies are masked out of the policy loss
    record = TrajectoryRecord.model_validate_json(output.extra_fields[RECORD_FIELD])
    assert [t.action.name for t in record.turns] == ["add_bbox", "add_point", "stop_action"]
    assert record.stop_reason is StopReason.STOP_ACTION and record.final_metrics["dice"] > 0.5
    assert len(STORE) == 0  # the loop closed and freed the episode
    extra_info = {**item["extra_info"], **output.extra_fields}
    result = compute_score(item["data_source"], "", item["reward_model"]["ground_truth"], extra_info)
    assert result["score"] == pytest.approx(score_record(record, "medseg").total)


def test_agent_loop_closes_episode_when_model_stops_calling_tools(tiny_qwen, tmp_path):
    _, _, output = run_loop(tiny_qwen, tmp_path, [BOX, "I think this is fine."])
    record = TrajectoryRecord.model_validate_json(output.extra_fields[RECORD_FIELD])
    assert record.stop_reason is StopReason.POLICY_ENDED
    assert record.final_metrics["iou"] == pytest.approx(record.turns[0].iou)
    assert len(STORE) == 0


def test_launch_overrides_load_into_verls_config(tmp_path):
    options = RLLaunchOptions(
        model="/models/Qwen3-VL-8B-Instruct",
        train_files=["/data/train.parquet"],
        val_files=["/data/val.parquet"],
        out_dir=str(tmp_path),
        tool="http://tool-server:8000",
        nnodes=4,
        reward="medsam_agent",
        reward_overrides=["params.good_iou=0.85"],
        overrides=["trainer.total_epochs=3"],
    )
    config = compose_verl_config(prepare_run(options))
    assert config.algorithm.adv_estimator == "grpo"
    assert config.trainer.nnodes == 4 and config.trainer.total_epochs == 3
    assert config.actor_rollout_ref.rollout.n == 8 and config.actor_rollout_ref.rollout.multi_turn.enable
    assert config.reward.custom_reward_function.reward_kwargs.reward == "medsam_agent"
    assert list(config.reward.custom_reward_function.reward_kwargs.overrides) == ["params.good_iou=0.85"]
    tools_yaml = yaml.safe_load(Path(config.actor_rollout_ref.rollout.multi_turn.tool_config_path).read_text())
    assert [t["config"]["tool"] for t in tools_yaml["tools"]] == ["http://tool-server:8000"] * 3
    with pytest.raises(Exception, match="nonexistent_key"):
        compose_verl_config(prepare_run(options) + ["trainer.nonexistent_key=1"])


def test_shipped_tool_yaml_matches_the_generator():
    shipped = yaml.safe_load(shipped_config("verl_tools.yaml").read_text())
    assert shipped == tool_config({"tool": "http://127.0.0.1:8000", "device": "cuda"})
    names = [t["tool_schema"]["function"]["name"] for t in shipped["tools"]]
    assert names == ["add_bbox", "add_point", "stop_action"]
    loop = yaml.safe_load(shipped_config("verl_agent_loop.yaml").read_text())
    assert loop == [{"name": "medseg_agent", "_target_": "medseg_agent.training.verl.agent_loop.MedSegAgentLoop"}]
    json.dumps(shipped)  # plain data only


def test_tools_through_the_tool_server(tmp_path):
    from medseg_agent.serving.app import create_app
    from medseg_agent.serving.server import BackgroundServer
    from medseg_agent.tools.registry import build_tool

    row = rl_row(disc(), 0)
    box = {"bbox_2d": [300, 250, 700, 780]}

    def run(spec: str, request_id: str) -> float:
        path = write_tool_config(tmp_path / f"{request_id}.yaml", {"tool": spec})
        tools = {t.name: t for t in initialize_tools_from_config(str(path))}
        data = agent_data(row, request_id)
        response, _, metrics, _ = asyncio.run(call(tools["add_bbox"], data, box))
        assert len(response.image) == 1
        STORE.pop(request_id)
        return metrics["iou"]

    with BackgroundServer(create_app(build_tool("classic"))) as server:
        remote = run(server.url, "remote")
    assert remote > 0.5 and remote == pytest.approx(run("classic", "local"))  # same tool, same mask


@pytest.mark.parametrize(
    ("gt_mask_rle", "problem"),
    [
        ({"size": [12, 16], "counts": "3"}, r"gt_mask_rle is not a mask: RLE runs cover 3 pixels"),
        ({"size": [16, 12], "counts": "P6"}, r"gt_mask_rle size \(16, 12\) does not match the image \(12, 16\)"),
    ],
)
def test_an_rl_row_whose_ground_truth_is_not_this_images_mask_is_refused(gt_mask_rle, problem):
    png = cv2.imencode(".png", np.full((12, 16, 3), 90, np.uint8))[1].tobytes()
    spec = EpisodeSpec.from_kwargs(
        {"target": "liver", "gt_mask_rle": gt_mask_rle, "image_png_b64": base64.b64encode(png).decode()}
    )
    with pytest.raises(EpisodeSpecError, match=problem):
        spec.to_sample()


_PNG = base64.b64encode(cv2.imencode(".png", np.full((12, 16, 3), 90, np.uint8))[1].tobytes()).decode()
_RLE = {"size": [12, 16], "counts": "P6"}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"gt_mask_rle": "P6"}, r"create_kwargs\.gt_mask_rle must be a COCO RLE mapping .*got str"),
        ({"gt_mask_rle": [1, 2]}, r"create_kwargs\.gt_mask_rle must be a COCO RLE mapping .*got list"),
        ({"spacing": "abc"}, r"create_kwargs\.spacing: invalid spacing 'abc' \(expected two sizes in mm, > 0\)"),
        ({"spacing": [0.5, 0.0]}, r"create_kwargs\.spacing: invalid spacing \[0\.5, 0\.0\]"),
        ({"spacing": [1, 2, 3]}, r"create_kwargs\.spacing: invalid spacing"),
        ({"target": 7}, r"create_kwargs\.target must be text, got int 7"),
        ({"image_path": 3}, r"create_kwargs\.image_path must be text, got int"),
        ({"modality": ["CT"]}, r"create_kwargs\.modality must be text, got list"),
    ],
)
def test_an_rl_row_with_a_field_of_the_wrong_kind_names_the_field(change, problem):
    with pytest.raises(EpisodeSpecError, match=problem):
        EpisodeSpec.from_kwargs({"target": "liver", "gt_mask_rle": _RLE, "image_png_b64": _PNG, **change})


def test_an_rl_row_whose_inline_image_is_not_base64_is_refused():
    spec = EpisodeSpec.from_kwargs({"target": "liver", "gt_mask_rle": _RLE, "image_png_b64": "not base64!"})
    with pytest.raises(EpisodeSpecError, match="image_png_b64 is not base64"):
        spec.to_sample()
    spec = EpisodeSpec.from_kwargs({"target": "liver", "gt_mask_rle": _RLE, "image_png_b64": _PNG, "spacing": 0.8})
    assert spec.spacing == (0.8, 0.8) and spec.to_sample().image.shape == (12, 16, 3)
    # parquet writes an unknown spacing as an empty list
    unknown = EpisodeSpec.from_kwargs({"target": "liver", "gt_mask_rle": _RLE, "image_png_b64": _PNG, "spacing": []})
    assert unknown.spacing is None
