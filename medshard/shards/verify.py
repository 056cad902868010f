"""Re-read every shard of a dataset and check it against the card, manifest and indexes."""

from __future__ import annotations

import hashlib
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from medshard.errors import DatasetError
from medshard.shards.checksums import check_file, file_sha256
from medshard.shards.layout import MANIFEST_NAME, index_name
from medshard.shards.random_access import ShardFiles
from medshard.shards.reader import Dataset, walk_shard
from medshard.shards.zarr_store import array_sha256, open_sample

__all__ = ["VerifyReport", "verify_dataset", "read_dali_index"]


@dataclass
class VerifyReport:
    samples: int = 0
    shards: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def read_dali_index(path: Path) -> list[list[tuple[str, int, int, str]]]:
    """Parse a `wds2idx` v1.2 index: per sample, [(field, data offset, size, member name)]."""
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not a DALI webdataset index (it is not UTF-8 text)") from exc
    header = lines[0].split() if lines else []
    if len(header) != 2 or header[0] != "v1.2" or not header[1].isdigit():
        raise DatasetError(f"{path}: not a DALI webdataset index (v1.2)")
    samples = []
    for number, line in enumerate(lines[1:], start=2):
        tokens = line.split()
        try:
            if not tokens or len(tokens) % 4:
                raise ValueError
            samples.append(
                [
                    (tokens[i], int(tokens[i + 1]), int(tokens[i + 2]), tokens[i + 3])
                    for i in range(0, len(tokens), 4)
                ]
            )
        except ValueError:
            raise DatasetError(f"{path}: malformed index line {number}: {line[:80]!r}") from None
    if int(header[1]) != len(samples):
        raise DatasetError(f"{path}: the index header counts a different number of samples")
    return samples


def _walk_shard(path: Path) -> list[dict]:
    """Per sample: key, header offset, members [(field, data offset, size, sha256)]."""
    return [
        {
            "key": sample.key,
            "offset": sample.offset,
            "members": [
                (field, offset, len(data), hashlib.sha256(data).hexdigest())
                for field, offset, data in sample.members
            ],
        }
        for sample in walk_shard(path)
    ]


def _verify_zarr_sample(dataset: Path, row: dict) -> list[str]:
    """The sample's arrays exist with the manifest's shape and dtype and their checksums."""
    where = f"{row['zarr_path']}"
    try:
        image, mask = open_sample(dataset, row["zarr_path"])
    except DatasetError as exc:
        return [str(exc)]
    found = []
    if list(image.shape) != row["shape"] or str(image.dtype) != row["dtype"]:
        found.append(
            f"{where}/image: shape {list(image.shape)} {image.dtype}, "
            f"manifest says {row['shape']} {row['dtype']}"
        )
    arrays = [("image", image)] + ([("labels/mask", mask)] if mask is not None else [])
    for name, array in arrays:
        try:
            values = array[...]
        except Exception as exc:  # a damaged chunk raises the codec's own error
            found.append(f"{where}/{name}: unreadable ({exc})")
            continue
        if array_sha256(values) != array.attrs.get("medshard", {}).get("sha256"):
            found.append(f"{where}/{name}: checksum differs from the one written")
    if mask is not None and list(mask.shape) != row["shape"][1:]:
        found.append(f"{where}/labels/mask: shape {list(mask.shape)} differs from the image's")
    return found


def _check_files(ds: Dataset, problems: list[str]) -> None:
    """Every file the card checksums, but the manifest (checked before it is parsed)."""
    for name, expected in (ds.card.checksums or {}).items():
        if name != MANIFEST_NAME:
            try:
                check_file(ds.path, name, expected)
            except DatasetError as exc:
                problems.append(str(exc))


def _unique_keys(manifest: list[dict]) -> list[str]:
    counts = Counter(row["key"] for row in manifest)
    duplicates = sorted(key for key, n in counts.items() if n > 1)
    if not duplicates:
        return []
    listed = ", ".join(repr(k) for k in duplicates[:10])
    more = f" and {len(duplicates) - 10} more" if len(duplicates) > 10 else ""
    return [f"{MANIFEST_NAME}: keys appear in more than one row: {listed}{more}"]


def _damaged_samples(ds: Dataset, shard: str, rows: list[dict]) -> list[str]:
    """Which samples of a shard that fails its checksum differ from their own checksums."""
    files = ShardFiles(ds.path)
    found = []
    try:
        for row in rows:
            if row["shard"] == shard and row["sample_sha256"] is not None:
                try:
                    files.read(shard, row["offset"], row["bytes"], row["key"], row["sample_sha256"])
                except DatasetError as exc:
                    found.append(str(exc))
    finally:
        files.close()
    return found


def verify_dataset(dataset: str | Path, max_problems: int = 20) -> VerifyReport:
    """Check every file against the card's checksums, and every shard byte against the
    manifest and the DALI indexes."""
    ds = Dataset(dataset)
    report = VerifyReport()
    problems = report.problems
    _check_files(ds, problems)
    try:
        manifest = ds.manifest.to_pylist()
    except DatasetError as exc:  # nothing else can be checked against a damaged manifest
        problems.append(str(exc))
        return report
    problems.extend(_unique_keys(manifest))
    rows = {row["key"]: row for row in manifest}
    seen: Counter[str] = Counter()

    for shard in ds.card.shards:
        path = ds.path / shard.path
        report.shards += 1
        if not path.is_file():
            problems.append(f"{shard.path}: shard file is missing")
            continue
        report.bytes += path.stat().st_size
        if file_sha256(path) != shard.sha256:
            problems.append(f"{shard.path}: checksum differs from the card")
            problems.extend(_damaged_samples(ds, shard.path, manifest))
        try:
            walked = _walk_shard(path)
        except (tarfile.TarError, EOFError, OSError, DatasetError) as exc:
            problems.append(f"{shard.path}: shard is truncated or corrupt ({exc})")
            continue
        if len(walked) != shard.samples:
            problems.append(
                f"{shard.path}: holds {len(walked)} samples, the card says {shard.samples}"
            )
        index_path = ds.path / index_name(shard.path)
        try:
            index = read_dali_index(index_path)
            listed = [[(f, o, s) for f, o, s, _ in sample] for sample in index]
            actual = [[(f, o, s) for f, o, s, _ in sample["members"]] for sample in walked]
            if listed != actual:
                problems.append(f"{index_name(shard.path)}: index does not match the shard")
        except OSError as exc:
            problems.append(f"{index_name(shard.path)}: unreadable index ({exc.strerror})")
        except DatasetError as exc:
            problems.append(str(exc))
        for sample in walked:
            key = sample["key"]
            seen[key] += 1
            report.samples += 1
            row = rows.get(key)
            if row is None:
                problems.append(f"{shard.path}: key {key!r} is not in the manifest")
                continue
            fields = [m[0] for m in sample["members"]]
            if row["shard"] != shard.path or row["offset"] != sample["offset"]:
                problems.append(f"{shard.path}: key {key!r} is not where the manifest puts it")
            if row["members"] != fields:
                listed = row["members"]
                problems.append(
                    f"{shard.path}: key {key!r} has members {fields}, manifest: {listed}"
                )
            image = next((m for m in sample["members"] if m[0].startswith("image.")), None)
            if ds.card.kind == "images" and image and image[3] != row["source_sha256"][0]:
                problems.append(
                    f"{shard.path}: key {key!r} image bytes differ from the source checksum"
                )

    for key, row in rows.items():
        if row["zarr_path"] is not None:
            report.samples += 1
            problems.extend(_verify_zarr_sample(ds.path, row))
        if row["shard"] is not None and seen[key] == 0:
            problems.append(f"{row['shard']}: key {key!r} from the manifest is missing")
        elif seen[key] > 1:
            problems.append(f"key {key!r} appears {seen[key]} times in the shards")
    del problems[max_problems:]
    return report
