"""The first-action probe (benchmarks/first_action_probe.py) runs end to end on a tiny model: it
writes one probe point per ``--probe-every`` steps, saves a model that a second run starts from."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "first_action_probe.py"
TINY = ["--train-scenes", "4", "--probe-scenes", "2", "--image-size", "128", "--view", "64", "--hidden", "32",
        "--layers", "1", "--batch", "2", "--threads", "1"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *TINY, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_probe_points_are_written_and_a_saved_model_starts_the_next_run(tmp_path):
    bare = run("--task", "bare", "--steps", "2", "--probe-every", "1", "--patch-size", "8", "--save",
               "--vision-hidden", "32", "--vision-depth", "1", "--whole-numbers", "1000", "--sinusoidal",
               "--out", str(tmp_path / "bare"))
    assert bare.returncode == 0, bare.stderr[-2000:]
    points = [json.loads(line) for line in (tmp_path / "bare" / "probe.jsonl").read_text().splitlines()]
    assert [p["step"] for p in points] == [1, 2]
    for point in points:
        assert 0.0 <= point["valid"] <= 1.0 and 0.0 <= point["box_iou"] <= 1.0
        assert 0.0 <= point["centre_inside"] <= point["centre_on_lesion"] <= 1.0
        assert 0 <= point["distinct"] <= 2 and point["loss"] > 0
    config = json.loads((tmp_path / "bare" / "model" / "config.json").read_text())
    assert config["vision_config"]["patch_size"] == 8
    assert (config["vision_config"]["hidden_size"], config["vision_config"]["depth"]) == (32, 1)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "bare" / "model")
    assert tokenizer.tokenize("[613, 1000]") == ["[", "613", ",Ġ", "1000", "]"]  # --whole-numbers 1000

    full = run("--task", "full", "--steps", "1", "--probe-every", "1", "--init", str(tmp_path / "bare" / "model"),
               "--bare-share", "0.5", "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-2000:]
    assert len((tmp_path / "full" / "probe.jsonl").read_text().splitlines()) == 1
    assert "drawing 4 + 2 full scenes (50% of the training ones bare)" in full.stdout
    assert not (tmp_path / "full" / "base").exists()  # started from the saved model, built nothing


def test_bad_counts_are_refused(tmp_path):
    done = run("--steps", "0", "--out", str(tmp_path))
    assert done.returncode == 2 and "--steps" in done.stderr
    done = run("--sinusoidal", "--out", str(tmp_path))
    assert done.returncode == 2 and "--sinusoidal needs --whole-numbers" in done.stderr


def losses(out: Path) -> list[tuple[int, float]]:
    return [(p["step"], p["loss"]) for p in map(json.loads, (out / "probe.jsonl").read_text().splitlines())]


@pytest.mark.slow
def test_a_stopped_run_resumes_where_it_stopped_and_refuses_other_settings(tmp_path):
    common = ("--task", "bare", "--probe-every", "2", "--patch-size", "8")
    straight = tmp_path / "straight"
    done = run(*common, "--steps", "4", "--out", str(straight))
    assert done.returncode == 0, done.stderr[-2000:]

    # the second run builds its batches in worker processes that run ahead of training: the
    # checkpoint must still hold the sampler's state after the step it saves
    halves = tmp_path / "halves"
    first = run(*common, "--steps", "4", "--minutes", "1e-6", "--loader-workers", "2",
                "--out", str(halves))  # out of time after step 1
    assert first.returncode == 0, first.stderr[-2000:]
    assert "stopped at step 1" in first.stdout
    with (halves / "probe.jsonl").open("a") as handle:  # a point measured after the checkpoint: dropped
        handle.write(json.dumps({"step": 3, "loss": 9.9}) + "\n")
    halves = halves.rename(tmp_path / "moved")  # a run folder resumes wherever it is
    second = run(*common, "--steps", "4", "--loader-workers", "2", "--out", str(halves))
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming" in second.stdout and "after step 1" in second.stdout
    # same batches, same optimizer state: the same run (plus the point where the first part stopped)
    assert losses(halves)[0][0] == 1 and losses(halves)[1:] == losses(straight)
    assert not (halves / "checkpoint.partial").exists() and not (halves / "checkpoint.old").exists()

    # the first part of a longer run again (a Makefile rerun): nothing trained, nothing drawn
    again = run(*common, "--steps", "2", "--out", str(halves))
    assert again.returncode == 0 and "at step 4 already" in again.stdout and "drawing" not in again.stdout
    assert len(losses(halves)) == 3

    other = run(*common, "--steps", "6", "--lr", "0.01", "--out", str(halves))
    assert other.returncode != 0 and "lr differ" in other.stderr
    assert len(losses(halves)) == 3  # nothing lost


def load_probe_module(monkeypatch):
    """The script as a module, registered so that worker processes can find its functions."""
    spec = importlib.util.spec_from_file_location("first_action_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "first_action_probe", module)
    spec.loader.exec_module(module)
    return module


def test_scenes_are_the_same_whoever_draws_them(monkeypatch, tmp_path):
    probe = load_probe_module(monkeypatch)
    monkeypatch.setattr(probe, "SCENES_PER_STREAM", 3)
    options = ["--out", str(tmp_path), "--image-size", "64", "--view", "32"]
    one = probe.scenes(probe.parse_args(options), 7, seed=1)
    three = probe.scenes(probe.parse_args([*options, "--draw-workers", "3"]), 7, seed=1)
    first_stream = probe.scenes(probe.parse_args(options), 3, seed=1)

    def pixels(rows):
        return [np.asarray(row["images"][0]) for row in rows]

    assert len(one) == len(three) == 7
    assert all(np.array_equal(a, b) for a, b in zip(pixels(one), pixels(three), strict=True))
    assert [r["truth"] for r in one] == [r["truth"] for r in three]
    # the first stream is the seed's own: a shorter run's scenes are the first scenes of a longer one
    assert all(np.array_equal(a, b) for a, b in zip(pixels(one[:3]), pixels(first_stream), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(pixels(one[:3]), pixels(one[3:6]), strict=True))


def test_the_annealing_schedule_warms_up_holds_then_falls_to_its_floor(monkeypatch, tmp_path, capsys):
    probe = load_probe_module(monkeypatch)
    args = probe.parse_args(["--out", str(tmp_path), "--steps", "1000", "--anneal-from", "600", "--anneal-to", "0.1"])
    shares = [probe.lr_share(args, step) for step in range(1100)]
    assert shares[0] == pytest.approx(1 / 30) and shares[29] == shares[599] == 1.0
    assert all(a >= b for a, b in zip(shares[600:], shares[601:], strict=False))  # never rises once falling
    assert shares[800] == pytest.approx(0.55) and shares[1000] == shares[1099] == pytest.approx(0.1)
    constant = probe.parse_args(["--out", str(tmp_path), "--steps", "1000"])
    assert probe.lr_share(constant, 999) == 1.0
    for bad, message in ((["--anneal-from", "1000"], "--anneal-from must be between"),
                         (["--anneal-from", "10", "--anneal-to", "1.5"], "--anneal-to must be within")):
        with pytest.raises(SystemExit):
            probe.parse_args(["--out", str(tmp_path), "--steps", "1000", *bad])
        assert message in capsys.readouterr().err


def test_no_probe_scene_is_one_of_the_learning_demos_images(monkeypatch, tmp_path):
    """A probe model is the demo's --base-model: had the probe drawn the demo's train, validation or
    test images, the demo would score its SFT agent on scenes the base was trained on."""
    from PIL import Image

    from medseg_agent.data.synthetic import SyntheticConfig, build_synthetic_dataset, generate_image
    from medseg_agent.recipes.train_demo import DemoSettings

    probe = load_probe_module(monkeypatch)
    demo = DemoSettings()
    data = build_synthetic_dataset(tmp_path / "demo", SyntheticConfig(train=1, val=1, test=1, seed=demo.data_seed))
    firsts = [np.asarray(Image.open(path)) for path in sorted((data / "images").glob("*-00000.png"))]
    assert len(firsts) == 3

    def first_scene(seed):
        return generate_image(SyntheticConfig().image_size, SyntheticConfig(), np.random.default_rng(seed)).image

    # the comparison can fail: a stream seeded like the demo's data opens with its first train image
    assert any(np.array_equal(first_scene(demo.data_seed), image) for image in firsts)
    args = probe.parse_args(["--out", str(tmp_path / "probe")])
    seeds = [*probe.stream_seeds(100_000, probe.TRAIN_SEED), *probe.stream_seeds(100_000, probe.BARE_SEED),
             *probe.stream_seeds(args.probe_scenes, probe.HELD_OUT_SEED)]
    for seed in seeds:  # a stream that opened differently is a different stream throughout
        scene = first_scene(seed)
        assert not any(np.array_equal(scene, image) for image in firsts), f"probe stream {seed} is a demo split"
