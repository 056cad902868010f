"""Re-read every shard of a dataset and check it against the card, manifest and indexes."""

from __future__ import annotations

import hashlib
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from medshard.errors import DatasetError
from medshard.shards.layout import index_name, split_member_name
from medshard.shards.reader import Dataset, check_tar_end
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
    lines = path.read_text().splitlines()
    if not lines or not lines[0].startswith("v1.2 "):
        raise DatasetError(f"{path}: not a DALI webdataset index (v1.2)")
    samples = []
    for line in lines[1:]:
        tokens = line.split()
        if len(tokens) % 4:
            raise DatasetError(f"{path}: malformed index line {line!r}")
        samples.append(
            [
                (tokens[i], int(tokens[i + 1]), int(tokens[i + 2]), tokens[i + 3])
                for i in range(0, len(tokens), 4)
            ]
        )
    if int(lines[0].split()[1]) != len(samples):
        raise DatasetError(f"{path}: the index header counts a different number of samples")
    return samples


def _file_sha256(path: Path) -> str:
    """Checksum of a file read in blocks: a shard can be larger than memory allows."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _walk_shard(path: Path) -> list[dict]:
    """Per sample: key, header offset, members [(field, data offset, size, sha256)]."""
    samples: list[dict] = []
    check_tar_end(path)
    with tarfile.open(path, mode="r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            key, member_field = split_member_name(info.name)
            if not samples or samples[-1]["key"] != key:
                samples.append({"key": key, "offset": info.offset, "members": []})
            data = tar.extractfile(info).read()
            if len(data) != info.size:
                raise DatasetError(f"{path}: member {info.name} is truncated")
            digest = hashlib.sha256(data).hexdigest()
            samples[-1]["members"].append((member_field, info.offset_data, info.size, digest))
    return samples


def _verify_zarr_sample(dataset: Path, row: dict) -> list[str]:
    """The sample's arrays exist with the manifest's shape and dtype and their checksums."""
    where = f"{row['zarr_path']}"
    try:
        image, mask = open_sample(dataset, row["zarr_path"])
    except DatasetError:
        return [f"{where}: the sample's arrays are missing"]
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


def verify_dataset(dataset: str | Path, max_problems: int = 20) -> VerifyReport:
    """Check every shard byte against the card, the manifest and the DALI indexes."""
    ds = Dataset(dataset)
    report = VerifyReport()
    problems = report.problems
    rows = {row["key"]: row for row in ds.manifest.to_pylist()}
    seen: Counter[str] = Counter()

    for shard in ds.card.shards:
        path = ds.path / shard.path
        report.shards += 1
        if not path.is_file():
            problems.append(f"{shard.path}: shard file is missing")
            continue
        report.bytes += path.stat().st_size
        if _file_sha256(path) != shard.sha256:
            problems.append(f"{shard.path}: checksum differs from the card")
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
        except (OSError, DatasetError) as exc:
            problems.append(f"{index_name(shard.path)}: unreadable index ({exc})")
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
