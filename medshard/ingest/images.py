"""`medshard ingest images`: a CSV table of 2D images (PNG, JPEG, TIFF) with labels into
WebDataset shards. The encoded bytes are stored unchanged; the loaders decode them."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from medshard import __version__
from medshard.errors import BadInputError
from medshard.ingest.build import (
    MemberSource,
    SampleSpec,
    ShardTask,
    Staging,
    check_output,
    fingerprint,
    plan_shards,
    write_shard,
)
from medshard.ingest.cluster import dask_client, run_tasks
from medshard.ingest.image_probe import ImageInfo, probe_image
from medshard.ingest.options import IngestOptions
from medshard.ingest.result import IngestResult, count_splits
from medshard.ingest.splits import make_splits, quantile_strata
from medshard.ingest.table import (
    KeyRegistry,
    LabelSpec,
    check_rows,
    read_table,
    require_columns,
    row_file,
    row_key,
)
from medshard.shards.card import ChannelStats, DatasetCard, ShardInfo, write_card
from medshard.shards.manifest import write_manifest, write_rejected

__all__ = ["ImageIngestOptions", "ingest_images"]

_PROBE_CHUNK = 32


class ImageIngestOptions(IngestOptions):
    """`medshard ingest images`: a table of 2D images and their labels."""

    table: Path
    image_col: str
    root: Path | None = None  # image paths are relative to this; default: the table's folder
    label_col: str | None = None
    label_cols: tuple[str, ...] = ()
    target_col: str | None = None
    classes: tuple[str, ...] = ()
    key_col: str | None = None
    group_col: str | None = None
    split_col: str | None = None


def _probe_chunk(chunk: list[tuple[int, str]]) -> list[tuple[int, ImageInfo | str]]:
    """Dask task: probe a few images; a refusal comes back as its reason."""
    results = []
    for row, path in chunk:
        try:
            results.append((row, probe_image(path)))
        except (ValueError, OSError) as exc:
            results.append((row, str(exc)))
    return results


def _channel_stats(infos: list[ImageInfo]) -> ChannelStats | None:
    if not infos or len({info.shape[0] for info in infos}) != 1:
        return None
    channels = infos[0].shape[0]
    pixels = sum(info.pixels for info in infos)
    mean = [sum(i.total[c] for i in infos) / pixels for c in range(channels)]
    square = [sum(i.total_sq[c] for i in infos) / pixels for c in range(channels)]
    return ChannelStats(
        mean=mean,
        std=[math.sqrt(max(s - m * m, 0.0)) for s, m in zip(square, mean, strict=False)],
        min=[min(i.minimum[c] for i in infos) for c in range(channels)],
        max=[max(i.maximum[c] for i in infos) for c in range(channels)],
    )


def ingest_images(options: ImageIngestOptions, command: str = "") -> IngestResult:
    """Ingest an image table into a dataset at `options.out`; see ImageIngestOptions."""
    started = time.perf_counter()
    o = options
    spec = LabelSpec(o.label_col, tuple(o.label_cols), o.target_col, tuple(o.classes))
    rows = read_table(o.table)
    optional = [o.key_col, o.group_col, o.split_col]
    require_columns(o.table, rows, [o.image_col, *spec.columns, *[c for c in optional if c]])
    print_ = fingerprint(o.identity(), [o.table])
    if check_output(o.out, print_, o.overwrite):
        return IngestResult.unchanged(o.out)
    spec = spec.with_classes_from(rows)
    root = o.root or o.table.parent

    keys = KeyRegistry()

    def check(i: int, row: dict, where: str) -> dict:
        path = row_file(root, row, o.image_col, where)
        if not path.is_file():
            raise BadInputError(str(path), f"not a file ({where})")
        key = row_key(row, o.key_col, row[o.image_col])
        parsed = spec.parse(row)
        if o.split_col and not row[o.split_col]:
            raise ValueError(f"column {o.split_col!r} is empty")
        keys.claim(key, i)
        group = (row[o.group_col] if o.group_col else "") or key
        return {
            "row": i,
            "key": key,
            "path": path,
            "relative": row[o.image_col],
            "group": group,
            "split": row[o.split_col] if o.split_col else None,
            "parsed": parsed,
        }

    checked, rejected = check_rows(o.table, rows, check)
    accepted = {r["row"]: r for r in checked}
    _stop_at_first(rejected, o.on_error)

    with dask_client(o.workers, o.scheduler, o.processes) as client:
        items = [(i, str(r["path"])) for i, r in accepted.items()]
        chunks = [items[s : s + _PROBE_CHUNK] for s in range(0, len(items), _PROBE_CHUNK)]
        for chunk in run_tasks(client, _probe_chunk, chunks, description="decode", quiet=o.quiet):
            for i, outcome in chunk:
                if isinstance(outcome, str):
                    rejected.append(
                        {
                            "row": i,
                            "source": str(accepted[i]["path"]),
                            "key": accepted[i]["key"],
                            "reason": outcome,
                        }
                    )
                    del accepted[i]
                else:
                    accepted[i]["info"] = outcome
        rejected.sort(key=lambda r: r["row"])
        _stop_at_first(rejected, o.on_error)
        if not accepted:
            raise BadInputError(str(o.table), f"no row could be ingested ({len(rejected)} refused)")

        records = list(accepted.values())
        _assign_splits(records, spec, o)
        records.sort(key=lambda r: (r["split"], r["key"]))
        tasks = []
        with Staging(o.out) as staging:
            for split in sorted({r["split"] for r in records}):
                specs = [_sample_spec(r, spec) for r in records if r["split"] == split]
                sizes = [s.size for s in specs]
                for path, chunk in plan_shards(
                    split, specs, sizes=sizes, max_bytes=o.shard_bytes, max_samples=o.shard_samples
                ):
                    tasks.append(ShardTask(str(staging.dir), split, path, tuple(chunk)))
            written = run_tasks(
                client, write_shard, tasks, description="write shards", quiet=o.quiet
            )

            by_key = {r["key"]: r for r in records}
            manifest = []
            for summary, placed in written:
                for key, offset, nbytes, fields in placed:
                    manifest.append(
                        _manifest_row(by_key[key], summary.path, offset, nbytes, fields)
                    )
            write_manifest(staging.dir, manifest)
            if rejected:
                write_rejected(staging.dir, rejected)
            train = [r["info"] for r in records if r["split"] == "train"] or [
                r["info"] for r in records
            ]
            card = DatasetCard(
                kind="images",
                task=spec.task,
                fields=sorted({f for row in manifest for f in row["members"]}, key=_field_order),
                label_names=spec.names,
                target_name=o.target_col,
                counts=count_splits(manifest, spec.names),
                folds=o.folds if o.folds > 1 else 0,
                shards=[
                    ShardInfo(
                        path=s.path,
                        split=t.split,
                        samples=s.samples,
                        bytes=s.bytes,
                        sha256=s.sha256,
                    )
                    for t, (s, _) in zip(tasks, written, strict=False)
                ],
                stats=_channel_stats(train),
                rejected=len(rejected),
                sources={"table": str(o.table.resolve()), "root": str(Path(root).resolve())},
                options=o.identity(),
                command=command,
                fingerprint=print_,
                created_by=f"medshard {__version__}",
            )
            write_card(staging.dir, card)
            staging.commit()
    return IngestResult.from_card(
        o.out, card, time.perf_counter() - started, sum(r["info"].nbytes for r in records)
    )


def _stop_at_first(rejected: list[dict], on_error: str) -> None:
    if rejected and on_error == "fail":
        first = min(rejected, key=lambda r: r["row"])
        raise BadInputError(first["source"], first["reason"])


def _assign_splits(records: list[dict], spec: LabelSpec, o: ImageIngestOptions) -> None:
    if o.split_col:
        for r in records:
            r["fold"] = -1
        return
    if spec.task == "regression":
        strata = quantile_strata([r["parsed"]["target"] for r in records])
    else:
        strata = [spec.stratum(r["parsed"]) for r in records]
    splits, folds = make_splits(
        strata,
        [r["group"] for r in records],
        val_fraction=o.val_fraction,
        test_fraction=o.test_fraction,
        folds=o.folds,
        seed=o.seed,
    )
    for r, split, fold in zip(records, splits, folds, strict=False):
        r["split"], r["fold"] = split, fold


def _field_order(field: str) -> tuple[int, str]:
    return (0 if field.startswith("image.") else 1, field)


def _sample_spec(record: dict, spec: LabelSpec) -> SampleSpec:
    """The tar members of one image sample: image bytes unchanged, then the labels."""
    import numpy as np

    info: ImageInfo = record["info"]
    parsed = record["parsed"]
    members: list[tuple[str, bytes | MemberSource]] = [
        (f"image.{info.ext}", MemberSource(str(record["path"]), info.sha256))
    ]
    if "label" in parsed:
        members.append(("cls", str(parsed["label"]).encode()))
    if "labels" in parsed:
        members.append(("labels.npy", _npy(np.asarray(parsed["labels"], dtype=np.uint8))))
    if "target" in parsed:
        members.append(("target.npy", _npy(np.asarray([parsed["target"]], dtype=np.float32))))
    about = {
        "key": record["key"],
        "subject": record["group"],
        "source": record["relative"],
        **parsed,
    }
    if "label" in parsed:
        about["label_name"] = spec.names[parsed["label"]]
    members.append(("json", json.dumps(about, sort_keys=True).encode()))
    size = info.nbytes + sum(len(m) for _, m in members[1:])
    return SampleSpec(key=record["key"], members=tuple(members), size=size)


def _npy(array) -> bytes:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _manifest_row(record: dict, shard: str, offset: int, nbytes: int, fields: list[str]) -> dict:
    info: ImageInfo = record["info"]
    parsed = record["parsed"]
    return {
        "key": record["key"],
        "split": record["split"],
        "fold": record["fold"],
        "subject": record["group"],
        "label": parsed.get("label"),
        "labels": parsed.get("labels"),
        "target": parsed.get("target"),
        "source": [record["relative"]],
        "source_sha256": [info.sha256],
        "shape": list(info.shape),
        "dtype": info.dtype,
        "spacing": None,
        "fps": None,
        "timestamps": None,
        "shard": shard,
        "offset": offset,
        "members": fields,
        "zarr_path": None,
        "bytes": nbytes,
    }
