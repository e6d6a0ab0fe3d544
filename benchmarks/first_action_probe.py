"""How many SFT steps before the learning demo's model reads the image? A first-action probe.

The learning demo (``medseg-agent train demo``) learns the tool-call format long before its boxes
follow the image. This probe isolates that: the demo's model (a Qwen3-VL built from a config by
``models/tiny_qwen.py``) is trained, with the SFT collator ``train sft`` uses (loss on the
assistant reply only), on one turn only: image + target text -> the expert's first box
(``add_bbox`` around the target, 0-1000 coordinates, the medsam protocol), and every
``--probe-every`` steps greedy decoding on held-out scenes says whether the boxes find the target:

* ``valid``: replies that parse as a box; ``box_iou``: mean IoU with the target's box;
* ``centre_inside``: the box centre falls on the target; ``centre_on_lesion``: on any lesion (the
  target or a look-alike: a lesion found, the text not necessarily read); ``distinct``: different boxes among the
  held-out scenes (1 = the same box whatever the image).

Tasks: ``full`` (the demo's scenes: the target among 2-3 look-alikes, the text names what tells it
apart) or ``bare`` (one lesion, the text "lesion": localisation without reading). A model saved by
``--save`` can start another run (``--init``): a bare pre-stage, then the full task.

    python benchmarks/first_action_probe.py --task bare --steps 800 --out runs/probe/bare
    python benchmarks/first_action_probe.py --task full --patch-size 8 --steps 1500 --out runs/probe/full-p8
    python benchmarks/first_action_probe.py --task full --init runs/probe/bare/model --out runs/probe/curriculum

The training loop here is a plain AdamW loop on purpose: the probe measures the model and the data,
and must show the loss of every step; the demo itself trains with TRL. Results go to
``OUT/probe.jsonl`` (one line per probe point, appended as it is measured). At every probe point
the model, optimizer and batch order are saved to ``OUT/checkpoint`` (atomically); rerunning the same
command resumes from there, so a long run (thousands of steps) can be stopped and continued, or
extended with a larger ``--steps``. Other settings for an existing checkpoint are refused.

On a machine with many cores, ``--draw-workers`` draws the scenes in parallel and ``--loader-workers``
builds the training batches in worker processes while the model trains (what a GPU needs: a batch of
16 takes ~75 ms to collate on one core). Neither changes the run: scenes come in streams of
2,000, the first from the seed itself (so the first 2,000 are a 2,000-scene run's scenes), the
k-th from ``[seed, k]``, whoever draws them; batches are sampled in the main process in the same
order, and a checkpoint stores the sampler's state after the last step trained.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

SYSTEM_ROLE = "system"
CHECKPOINT = "checkpoint"
STATE_FILE = "state.pt"
# options that may differ between a run and its resumption (the rest must match the checkpoint)
# (``out`` among them: a run folder may be moved or copied to another machine and resumed there)
RESUMABLE_CHANGES = {"out", "steps", "threads", "save", "device", "minutes", "draw_workers", "loader_workers",
                     "anneal_from", "anneal_to", "probe_every"}
# scenes drawn from one random stream (the first: the seed's own, the k-th: [seed, k])
SCENES_PER_STREAM = 2000
# the scenes' seeds, whatever --seed: the learning demo's own data (``train demo``, data seed 0:
# streams [0, split]) is none of them, so a probe model given to the demo as --base-model has never
# seen its train, validation or test images (tests/training/test_first_action_probe.py checks it)
TRAIN_SEED, HELD_OUT_SEED, BARE_SEED = 1, 2, 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from medseg_agent.recipes.train_demo import DemoModel, DemoSettings

    demo = DemoSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for the base model and probe.jsonl")
    parser.add_argument("--task", choices=["full", "bare"], default="full", help="the scenes (see above)")
    parser.add_argument("--train-scenes", type=int, default=2000, help="training scenes (drawn once, their own seed)")
    parser.add_argument("--probe-scenes", type=int, default=48, help="held-out scenes (their own seed)")
    parser.add_argument("--image-size", type=int, default=256, help="side of the scenes (pixels)")
    parser.add_argument("--view", type=int, default=demo.view, help="side of the image the model sees (the demo's)")
    parser.add_argument("--patch-size", type=int, default=16, help="vision patch (16: 16 image tokens at 128 px)")
    parser.add_argument("--hidden", type=int, default=DemoModel.hidden_size, help="language model width (the demo's)")
    parser.add_argument("--layers", type=int, default=DemoModel.num_layers,
                        help="language model layers (the demo's)")
    parser.add_argument("--vision-hidden", type=int, default=DemoModel.vision_hidden_size,
                        help="vision tower width (the demo's; a multiple of 32)")
    parser.add_argument("--vision-depth", type=int, default=DemoModel.vision_depth,
                        help="vision tower blocks (the demo's)")
    parser.add_argument("--system-prompt", action="store_true",
                        help="keep the protocol's system prompt (off: ~125 fewer tokens per row)")
    parser.add_argument("--bare-share", type=float, default=0.0,
                        help="share of the training scenes that are bare (one lesion, text 'lesion'), mixed into "
                             "the --task scenes as a curriculum; the held-out scenes stay --task")
    parser.add_argument("--text-first", action="store_true",
                        help="the target text before the image in the user turn (default: after it, the protocol's "
                             "layout), so that image tokens can attend to the text")
    numbers = parser.add_argument_group("coordinate tokens (default: digit by digit, as in Qwen's tokenizers)")
    numbers.add_argument("--whole-numbers", type=int, default=0, metavar="N",
                         help="one token per integer 0..N (1000: every coordinate one token)")
    numbers.add_argument("--sinusoidal", action="store_true",
                         help="number tokens and vision position table start as sinusoids (needs --whole-numbers)")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--anneal-from", type=int, default=0, metavar="STEP",
                        help="from this step to --steps the learning rate falls along a cosine from --lr to "
                             "--lr x --anneal-to (0: constant after the warm-up); may be set when resuming")
    parser.add_argument("--anneal-to", type=float, default=0.1,
                        help="the learning rate's share of --lr at --steps, with --anneal-from")
    parser.add_argument("--probe-every", type=int, default=100)
    parser.add_argument("--init", type=Path, default=None, help="start from this saved model (its tokenizer too)")
    parser.add_argument("--save", action="store_true", help="save the trained model to OUT/model")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="torch device for the model (cpu, cuda)")
    parser.add_argument("--draw-workers", type=int, default=1,
                        help="processes drawing the scenes (the same scenes whatever the number)")
    parser.add_argument("--loader-workers", type=int, default=0,
                        help="processes building training batches ahead of the model (0: in the training loop; "
                             "the same batches whatever the number)")
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="stop after this much wall time (0: no limit), with a probe point and a checkpoint, "
                             "so that a time-limited machine can run it in parts")
    parser.add_argument("--seed", type=int, default=0, help="model initialisation and batch order")
    args = parser.parse_args(argv)
    if not 0.0 <= args.bare_share <= 1.0:
        parser.error(f"--bare-share must be within [0, 1], got {args.bare_share}")
    if min(args.steps, args.batch, args.probe_every, args.train_scenes, args.probe_scenes, args.draw_workers) < 1:
        parser.error("--steps, --batch, --probe-every, --train-scenes, --probe-scenes and --draw-workers must be >= 1")
    if args.sinusoidal and not args.whole_numbers:
        parser.error("--sinusoidal needs --whole-numbers (1000 for the 0-1000 coordinates)")
    if args.anneal_from and not 0 < args.anneal_from < args.steps:
        parser.error(f"--anneal-from must be between 1 and --steps ({args.steps}), got {args.anneal_from}")
    if not 0.0 <= args.anneal_to <= 1.0:
        parser.error(f"--anneal-to must be within [0, 1], got {args.anneal_to}")
    if args.loader_workers < 0:
        parser.error(f"--loader-workers must be >= 0, got {args.loader_workers}")
    return args


def training_scenes(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The --task scenes, with a --bare-share of them replaced by bare scenes (their own seed, so the
    task's scenes are the first ones of a run without the mixture)."""
    bare = round(args.train_scenes * args.bare_share)
    mixed = scenes(args, args.train_scenes - bare, TRAIN_SEED, scored=False)
    if bare:
        mixed += scenes(argparse.Namespace(**{**vars(args), "task": "bare"}), bare, BARE_SEED, scored=False)
    return mixed


def scenes(args: argparse.Namespace, count: int, seed: int, scored: bool = True) -> list[dict[str, Any]]:
    """``count`` one-turn SFT rows (messages + view); ``scored``: with what the probe needs to score a
    reply (masks: left out of training rows, so that tens of thousands of scenes fit in memory).
    Drawn in streams of ``SCENES_PER_STREAM``, over ``--draw-workers`` processes when there are several."""
    streams = [(args, min(SCENES_PER_STREAM, count - k * SCENES_PER_STREAM), stream_seed, scored)
               for k, stream_seed in enumerate(stream_seeds(count, seed))]
    workers = min(args.draw_workers, len(streams))
    if workers <= 1:
        return [row for stream in streams for row in scene_stream(*stream)]
    with ProcessPoolExecutor(workers) as pool:
        return [row for part in pool.map(scene_stream, *zip(*streams, strict=True)) for row in part]


def stream_seeds(count: int, seed: int) -> list[int | list[int]]:
    """The random seed of each stream of ``count`` scenes: ``seed``, then ``[seed, k]``."""
    return [seed if k == 0 else [seed, k] for k in range(math.ceil(count / SCENES_PER_STREAM))]


def scene_stream(args: argparse.Namespace, count: int, seed: int | list[int], scored: bool) -> list[dict[str, Any]]:
    """``count`` rows from one random stream."""
    from PIL import Image

    from medseg_agent.data.synthetic import SyntheticConfig, generate_image
    from medseg_agent.environment.render import resize_view
    from medseg_agent.protocols import get_protocol
    from medseg_agent.protocols.conversation import Conversation, to_hf
    from medseg_agent.vocabulary.actions import AddBox, CoordinateSpace
    from medseg_agent.vocabulary.coordinates import CoordinateFrame, view_size_for

    protocol = get_protocol("medsam")
    config = SyntheticConfig(lookalikes=(0, 0), extras=(0, 0)) if args.task == "bare" else SyntheticConfig()
    rng = np.random.default_rng(seed)
    size = (args.image_size, args.image_size)
    view = view_size_for(size, args.view)
    frame = CoordinateFrame(CoordinateSpace.NORM1000, size, view)
    rows = []
    for _ in range(count):
        scene = generate_image(args.image_size, config, rng)
        ys, xs = np.nonzero(scene.mask)
        truth = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        x1, y1 = frame.from_pixels(truth[0] - 2, truth[1] - 2)
        x2, y2 = frame.from_pixels(truth[2] + 2, truth[3] + 2)
        conversation = Conversation.start(protocol, scene.target, resize_view(scene.image, view),
                                          CoordinateSpace.NORM1000)
        conversation.add_assistant(protocol.format_action(AddBox(round(x1), round(y1), round(x2), round(y2))))
        messages, images = to_hf(conversation)
        if not args.system_prompt:
            messages = [m for m in messages if m["role"] != SYSTEM_ROLE]
        if args.text_first:
            messages = [{**m, "content": sorted(m["content"], key=lambda part: part["type"] != "text")}
                        for m in messages]
        row = {"messages": messages, "images": [Image.fromarray(i) for i in images], "target": scene.target}
        if scored:
            row.update(mask=scene.mask, lesions=scene.labels > 0, truth=truth, frame=frame)
        rows.append(row)
    return rows


def base_model(args: argparse.Namespace, train: list[dict[str, Any]]) -> Path:
    """The demo's untrained model (``DemoModel``, its tokenizer learning the targets' phrases), with
    this probe's width, depth and patch, built once per OUT."""
    from medseg_agent.models.chat_template import qwen_vl_tool_template
    from medseg_agent.models.tiny_qwen import build_tiny_qwen_vl
    from medseg_agent.recipes.train_demo import DemoModel, prompt_texts

    if args.init is not None:
        return args.init
    folder = args.out / "base"
    if (folder / "config.json").exists():
        return folder
    model = DemoModel()
    return build_tiny_qwen_vl(folder, model.arch, hidden_size=args.hidden, num_layers=args.layers,  # type: ignore[arg-type]
                              vocab_size=model.vocab_size, max_pixels=args.view * args.view, seed=args.seed,
                              mlp_ratio=model.mlp_ratio, vision_depth=args.vision_depth,
                              vision_hidden_size=args.vision_hidden,
                              tokenizer_texts=prompt_texts(row["target"] for row in train), phrase_tokens=True,
                              chat_template=qwen_vl_tool_template(list_tools=False, tool_replies="user"),
                              patch_size=args.patch_size, whole_numbers=args.whole_numbers,
                              sinusoidal_positions=args.sinusoidal)


def probe(model: Any, processor: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Greedy first actions on ``rows``, scored against each target."""
    import torch

    from medseg_agent.metrics import box_iou
    from medseg_agent.protocols import get_protocol
    from medseg_agent.vocabulary.actions import AddBox

    protocol = get_protocol("medsam")
    valid, ious, inside, on_lesion, boxes = 0, [], 0, 0, set()
    model.eval()
    with torch.no_grad():
        for row in rows:
            text = processor.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, tokenize=False)
            inputs = processor(text=[text], images=row["images"], return_tensors="pt").to(model.device)
            output = model.generate(**inputs, max_new_tokens=48, do_sample=False,
                                    pad_token_id=processor.tokenizer.pad_token_id)
            reply = processor.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            action = protocol.parse(reply, row["frame"]).action
            if not isinstance(action, AddBox):
                ious.append(0.0)
                continue
            valid += 1
            x1, y1 = row["frame"].to_pixels(action.x1, action.y1)
            x2, y2 = row["frame"].to_pixels(action.x2, action.y2)
            ious.append(box_iou((x1, y1, x2, y2), row["truth"]))
            boxes.add((action.x1, action.y1, action.x2, action.y2))
            height, width = row["mask"].shape
            cx = min(width - 1, max(0, int((x1 + x2) / 2)))
            cy = min(height - 1, max(0, int((y1 + y2) / 2)))
            inside += bool(row["mask"][cy, cx])
            on_lesion += bool(row["lesions"][cy, cx])
    model.train()
    n = len(rows)
    return {"valid": round(valid / n, 3), "box_iou": round(float(np.mean(ious)), 3),
            "centre_inside": round(inside / n, 3), "centre_on_lesion": round(on_lesion / n, 3), "distinct": len(boxes)}


def lr_share(args: argparse.Namespace, step: int) -> float:
    """The learning rate's share of ``--lr`` after ``step`` optimizer steps: a 30-step warm-up, then
    constant, or from ``--anneal-from`` a cosine down to ``--anneal-to`` at ``--steps``."""
    warm = min(1.0, (step + 1) / 30)
    if not args.anneal_from or step < args.anneal_from:
        return warm
    progress = min(1.0, (step - args.anneal_from) / (args.steps - args.anneal_from))
    return warm * (args.anneal_to + (1.0 - args.anneal_to) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options a checkpoint was made with (those that must match to resume it)."""
    return fixed_settings({k: str(v) if isinstance(v, Path) else v for k, v in sorted(vars(args).items())})


def fixed_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without the options a resumption may change (a checkpoint made before an option
    joined :data:`RESUMABLE_CHANGES` still stores it)."""
    return {k: v for k, v in settings.items() if k not in RESUMABLE_CHANGES}


def save_checkpoint(out: Path, model: Any, processor: Any, state: dict[str, Any]) -> None:
    """Model, processor and training state to ``out/checkpoint``, replaced whole or not at all."""
    import torch

    final, partial = out / CHECKPOINT, out / f"{CHECKPOINT}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    processor.save_pretrained(partial)
    torch.save(state, partial / STATE_FILE)
    old = out / f"{CHECKPOINT}.old"
    if final.exists():
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(out: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    """The saved training state when ``out`` has a checkpoint of this run; refuses other settings."""
    import torch

    if not (out / CHECKPOINT / STATE_FILE).is_file() and (out / f"{CHECKPOINT}.old" / STATE_FILE).is_file():
        (out / f"{CHECKPOINT}.old").rename(out / CHECKPOINT)  # interrupted between the two renames
    path = out / CHECKPOINT / STATE_FILE
    if not path.is_file():
        return None
    state = torch.load(path, weights_only=False, map_location="cpu")  # a GPU run resumes on a CPU too
    wanted = run_settings(args)
    stored = fixed_settings(state["settings"])
    # an option added to this script after the checkpoint was made counts as left at its default
    defaults = run_settings(parse_args(["--out", str(out)]))
    changed = sorted(k for k in set(wanted) | set(stored) if wanted.get(k) != stored.get(k, defaults.get(k)))
    if changed:
        raise SystemExit(f"{out / CHECKPOINT} was made with other settings ({', '.join(changed)} differ); "
                         "use the same options to resume it, or another --out")
    return state


def keep_points_until(log: Path, step: int) -> None:
    """Drop probe points measured after the checkpoint (they will be measured again)."""
    if log.is_file():
        lines = [line for line in log.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        log.write_text("".join(f"{line}\n" for line in lines))


class TrainingBatches:
    """Training batches by index list: what a DataLoader worker builds from the rows it inherited."""

    def __init__(self, rows: list[dict[str, Any]], collate: Any) -> None:
        self.rows, self.collate = rows, collate

    def __getitem__(self, indices: list[int]) -> Any:
        return self.collate([{"messages": self.rows[i]["messages"], "images": self.rows[i]["images"]} for i in indices])


def sampled_batches(order: random.Random, size: int, batch: int, steps: range,
                    states: dict[int, Any]) -> Iterator[list[int]]:
    """The rows of each step, drawn in the main process; the sampler's state after each step goes to
    ``states`` (workers run ahead of training, a checkpoint needs the state of the step it saves)."""
    for step in steps:
        indices = order.sample(range(size), batch)
        states[step] = order.getstate()
        yield indices


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch
    from torch.utils.data import DataLoader
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from medseg_agent.training.sft import AssistantOnlyCollator

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    order = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    resumed = load_checkpoint(args.out, args)
    log = args.out / "probe.jsonl"
    if resumed and resumed["step"] >= args.steps and not args.save:  # a finished part of a longer run
        print(f"{args.out / CHECKPOINT} is at step {resumed['step']} already (--steps {args.steps}): nothing to train",
              flush=True)
        print(f"probe points: {log}", flush=True)
        return
    mixture = f" ({args.bare_share:.0%} of the training ones bare)" if args.bare_share else ""
    print(f"drawing {args.train_scenes} + {args.probe_scenes} {args.task} scenes{mixture}", flush=True)
    train, held_out = training_scenes(args), scenes(args, args.probe_scenes, HELD_OUT_SEED)
    folder = args.out / CHECKPOINT if resumed else base_model(args, train)
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).to(args.device)
    collate = AssistantOnlyCollator(processor, None, True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_share, args))
    losses: list[float] = []
    first, spent_wall, spent_cpu = 1, 0.0, 0.0
    if resumed:
        optimizer.load_state_dict(resumed["optimizer"])
        warmup.load_state_dict(resumed["scheduler"])
        order.setstate(resumed["order"])
        torch.set_rng_state(resumed["torch_rng"])
        losses = list(resumed["losses"])
        first, spent_wall, spent_cpu = resumed["step"] + 1, resumed["wall_s"], resumed["cpu_s"]
        keep_points_until(log, resumed["step"])
        print(f"resuming {args.out / CHECKPOINT} after step {resumed['step']}", flush=True)
    start, cpu = time.perf_counter() - spent_wall, time.process_time() - spent_cpu
    deadline = time.perf_counter() + args.minutes * 60 if args.minutes > 0 else float("inf")
    if args.loader_workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are forked after the tokenizer ran
    states: dict[int, Any] = {}
    steps = range(first, args.steps + 1)
    loader = DataLoader(TrainingBatches(train, collate), batch_size=None, num_workers=args.loader_workers,
                        sampler=sampled_batches(order, len(train), args.batch, steps, states),
                        prefetch_factor=4 if args.loader_workers else None)
    model.train()
    for step, batch in zip(steps, loader, strict=True):
        sampler_state = states.pop(step)
        loss = model(**batch.to(args.device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        warmup.step()
        optimizer.zero_grad()
        losses.append(float(loss.item()))
        out_of_time = time.perf_counter() >= deadline
        if step % args.probe_every == 0 or step == args.steps or out_of_time:
            point = {"step": step, "loss": round(float(np.mean(losses[-args.probe_every:])), 4),
                     "lr": float(f"{optimizer.param_groups[0]['lr']:.3g}"),
                     **probe(model, processor, held_out), "wall_s": round(time.perf_counter() - start, 1),
                     "cpu_s": round(time.process_time() - cpu, 1)}
            with log.open("a") as handle:
                handle.write(json.dumps(point) + "\n")
            print(json.dumps(point), flush=True)
            save_checkpoint(args.out, model, processor, {
                "settings": run_settings(args), "step": step, "optimizer": optimizer.state_dict(),
                "scheduler": warmup.state_dict(), "order": sampler_state, "torch_rng": torch.get_rng_state(),
                "losses": losses[-args.probe_every:], "wall_s": point["wall_s"], "cpu_s": point["cpu_s"]})
        if out_of_time and step < args.steps:
            print(f"stopped at step {step} after {args.minutes:g} min; run the same command again to go on", flush=True)
            break
    if args.save:
        model.save_pretrained(args.out / "model")
        processor.save_pretrained(args.out / "model")
    print(f"probe points: {log}", flush=True)


if __name__ == "__main__":
    main()
