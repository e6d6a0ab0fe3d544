"""``medseg-agent data ...``: build the demo dataset and inspect datasets.

``data_app`` is wired into the main CLI elsewhere; it also runs on its own
(``python -m medseg_agent.cli.data --help``).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from medseg_agent.cli.common import console, fail, say

data_app = typer.Typer(
    help="Datasets: build the real demo dataset, list what a dataset folder/file contains.",
    no_args_is_help=True,
    add_completion=False,
)


@data_app.command("build-demo")
def build_demo(
    out: Path | None = typer.Option(
        None, "--out", file_okay=False,
        help="Output folder (default: $MEDSEG_AGENT_CACHE/demo or ~/.cache/medseg-agent/demo)."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild even if a complete build is there."),
) -> None:
    """Build the demo dataset (brain MRI + AAL from Debian mricron-data, DSB 2018 nuclei from the
    stardist wheel) in BiomedParse layout; reuses a complete build unless --force."""
    from medseg_agent.data.demo import DemoBuildError, build_demo_dataset, default_demo_dir, demo_summary

    target = out if out is not None else default_demo_dir()
    start = time.perf_counter()
    try:
        with console.status(Text(f"building demo dataset in {target}")) as status:

            def progress(msg: str) -> None:
                status.update(Text(msg))
                console.log(msg)

            path = build_demo_dataset(target, force=force, progress=progress)
    except DemoBuildError as exc:
        say(("demo build failed: ", "red"), str(exc))
        raise typer.Exit(1) from exc
    summary = demo_summary(path)
    elapsed = time.perf_counter() - start
    say("demo dataset: ", (str(path), "bold"), f" ({elapsed:.1f} s)")
    console.print(
        f"{summary['n_samples']} samples on {summary['n_images']} images; "
        + ", ".join(f"{m}: {n}" for m, n in sorted(summary["modality"].items()))
    )
    table = Table(title="targets")
    table.add_column("target")
    table.add_column("samples", justify="right")
    for name, n in sorted(summary["target"].items()):
        table.add_row(name, str(n))
    console.print(table)


@data_app.command("build-synthetic")
def build_synthetic(
    out: Path = typer.Option(..., "--out", file_okay=False,
                             help="Output folder: images/, masks/, manifest.jsonl, synthetic.json."),
    train: int = typer.Option(600, "--train", min=0, help="Train images."),
    val: int = typer.Option(24, "--val", min=0, help="Validation images."),
    test: int = typer.Option(100, "--test", min=0, help="Test images."),
    size: int = typer.Option(256, "--size", min=128, max=1024, help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", min=0, help="Same seed and sizes: same files."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if a complete build is there."),
) -> None:
    """Build synthetic CT-like scans with several look-alike lesions and a text naming one of them
    (size, brightness, shape, side), split train/val/test by image: the task of `train demo`."""
    from medseg_agent.data.synthetic import SyntheticConfig, build_synthetic_dataset, synthetic_info
    from medseg_agent.runs.parallel import progress_bar

    try:
        config = SyntheticConfig(train=train, val=val, test=test, image_size=size, seed=seed)
    except ValueError as exc:
        fail(str(exc))
    start = time.perf_counter()
    try:
        with progress_bar() as progress:
            task = progress.add_task("synthetic scans", total=train + val + test)
            path = build_synthetic_dataset(out, config, force=force, on_image=lambda _: progress.advance(task))
    except FileExistsError as exc:
        fail(str(exc))
    summary = synthetic_info(path)["summary"]
    say("synthetic dataset: ", (str(path), "bold"), f" ({time.perf_counter() - start:.1f} s)")
    console.print(
        "images per split: " + ", ".join(f"{k} {v}" for k, v in summary["images"].items())
        + f"; {summary['mean_lesions_per_image']} lesions per image; attributes named in the target text: "
        + ", ".join(f"{k}: {v}" for k, v in summary["attributes_named"].items())
    )


@data_app.command("list")
def list_dataset(
    path: Path = typer.Argument(..., help="Dataset folder or file (BiomedParse, JSON, manifest, NIfTI, DICOM)."),
    format: str = typer.Option("auto", "--format", "-f", help="auto, biomedparse, json, manifest, nifti, dicom."),
    split: str | None = typer.Option(None, "--split", help="Only this split (e.g. test)."),
    label: Path | None = typer.Option(None, "--label", help="Volumes: label volume for a single NIfTI/DICOM image."),
    modality: str | None = typer.Option(None, "--modality", help="Volumes: CT, MRI, ... (default: guessed)."),
    window: str | None = typer.Option(None, "--window", help="Volumes: CT window preset or W400L40."),
    axis: str | None = typer.Option(None, "--axis", help="Volumes: axial (default), coronal or sagittal."),
    every_k: int | None = typer.Option(None, "--every-k", min=1, help="Volumes: keep every k-th labelled slice."),
    min_area: int | None = typer.Option(None, "--min-area", min=1, help="Volumes: minimum label area in pixels."),
    max_skipped: int = typer.Option(50, "--max-skipped", min=0, help="Skipped samples to list one by one."),
) -> None:
    """Count samples per dataset / modality / target and list skipped samples with reasons."""
    from medseg_agent.data import open_dataset

    given = {
        "label": label,
        "modality": modality,
        "window": window,
        "axis": axis,
        "every_k": every_k,
        "min_area": min_area,
    }
    options = {k: v for k, v in given.items() if v is not None}
    try:
        ds = open_dataset(path, format=format, split=split, **options)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        say((f"cannot open {path}: ", "red"), str(exc))
        raise typer.Exit(2) from exc
    counts: Counter[tuple[str, str, str]] = Counter()
    splits: Counter[str] = Counter()
    with console.status(Text(f"reading {path}")):
        for s in ds:
            counts[(s.dataset, s.modality, str(s.meta.get("target_name") or s.target))] += 1
            splits[s.split] += 1
    table = Table(title=f"{ds.name} ({ds.format}) — {sum(counts.values())} samples")
    table.add_column("dataset")
    table.add_column("modality")
    table.add_column("target")
    table.add_column("samples", justify="right")
    for (dname, modality, target), n in sorted(counts.items()):
        table.add_row(dname, modality, target, str(n))
    console.print(table)
    if splits:
        console.print("splits: " + ", ".join(f"{k}: {v}" for k, v in sorted(splits.items())))
    elif split is not None:
        console.print(f"no sample is in split {split!r}: run without --split to see the splits {path} has")
    if ds.skipped:
        st = Table(title=f"skipped: {len(ds.skipped)}", title_style="bold red")
        st.add_column("sample")
        st.add_column("reason")
        st.add_column("path", overflow="fold")
        for s in ds.skipped[:max_skipped]:
            st.add_row(s.sample_id, s.reason, s.path)
        console.print(st)
        if len(ds.skipped) > max_skipped:
            console.print(f"... and {len(ds.skipped) - max_skipped} more skipped")
    else:
        console.print("skipped: 0")


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the main CLI (called by ``medseg_agent.cli.app``)."""
    app.add_typer(data_app, name="data")


if __name__ == "__main__":  # pragma: no cover
    data_app()
