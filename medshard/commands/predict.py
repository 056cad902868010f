"""`medshard predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from medshard.commands.common import console, errors, fail
from medshard.errors import MedshardError

Opt = typer.Option


def predict(
    run: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_DIR_OR_CHECKPOINT",
            help="A run folder (OUTPUT/NAME: its best checkpoint) or a checkpoint in one "
            "(OUTPUT/NAME/last).",
        ),
    ],
    output_json: Annotated[
        Path,
        Opt(help="Where the predictions go (JSON); replaces only an earlier predictions file."),
    ],
    image: Annotated[
        list[str] | None,
        Opt(help="An image (PNG, JPEG, TIFF) or NIfTI volume; repeat it; a,b,c: modalities."),
    ] = None,
    images_dir: Annotated[
        Path | None, Opt(help="Every image or NIfTI file under a folder.")
    ] = None,
    dataset: Annotated[Path | None, Opt(help="A medshard dataset; with --split.")] = None,
    split: Annotated[str, Opt(help="The split of --dataset.")] = "test",
    threshold: Annotated[
        str, Opt(help="Multi-label: 0.5, one value per label, or name=value pairs.")
    ] = "0.5",
    batch_size: Annotated[int, Opt(min=1, help="Images per batch; patches per window.")] = 64,
    device: Annotated[Literal["cpu", "cuda"] | None, Opt(help="Default: cuda if any.")] = None,
    output_dir: Annotated[
        Path | None,
        Opt(help="Segmentation: where the NIfTI label maps go (never over another file)."),
    ] = None,
    quiet: Annotated[bool, Opt(help="No progress bar.")] = False,
) -> None:
    """Predict with a trained run: per-class probabilities, labels over the threshold, a
    regression value, or NIfTI label maps in each source's space; one JSON record per
    input. Preprocessing is the run's validation preprocessing."""
    from medshard.trainers.predict import open_run, run_copy
    from medshard.trainers.predict import predict as run_predict
    from medshard.trainers.predict_inputs import dataset_inputs, file_inputs, folder_inputs
    from medshard.trainers.predict_records import check_output, parse_thresholds, write_document

    given = [
        name
        for name, v in (("--image", image), ("--images-dir", images_dir), ("--dataset", dataset))
        if v
    ]
    if len(given) != 1:
        errors.print("[bold red]error:[/] give exactly one of --image, --images-dir and --dataset")
        raise typer.Exit(2)
    try:
        check_output(output_json)  # refused before the work, not after it
        trained = open_run(run)
        thresholds = parse_thresholds(threshold, trained.classes)
        if image:
            inputs = file_inputs(image)
        elif images_dir:
            inputs = folder_inputs(images_dir)
        else:
            whole = trained.task.name == "segmentation"
            inputs = dataset_inputs(dataset, split, whole, run_copy(trained))
        document = run_predict(
            trained,
            inputs,
            batch_size=batch_size,
            device=device,
            thresholds=thresholds,
            output_dir=output_dir,
            show=not quiet,
        )
        write_document(document, output_json)
    except MedshardError as exc:
        fail(exc)
    _report(document, output_json)
    if not document["summary"]["predicted"]:
        raise typer.Exit(1)


def _report(document: dict, path: Path) -> None:
    from rich.table import Table

    for record in document["records"]:
        if "error" in record:
            errors.print(
                f"{record['input']}: {record['error']}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )  # one line per input, whatever the terminal's width
    done = document["summary"]
    table = Table(title=f"predictions: {path}", title_justify="left")
    table.add_column("label")
    table.add_column("inputs", justify="right")
    for label, count in done["counts"].items():
        table.add_row(label, str(count))
    if done["counts"]:
        console.print(table)
    for name, value in document.get("metrics", {}).items():
        if isinstance(value, float):
            console.print(f"{name}: {value:.4f}")
    console.print(
        f"{done['predicted']} of {done['inputs']} inputs predicted, {done['failed']} failed"
    )
