"""Re-read every shard of a dataset and check it against the card, manifest and indexes.

A dataset at a URL is checked object by object as it is now in the store: each object is
downloaded once into a scratch folder (never from the cache), checked there, and removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from medshard.errors import CorruptDataError, DatasetError
from medshard.shards.checksums import check_file, file_sha256
from medshard.shards.layout import MANIFEST_NAME, index_name
from medshard.shards.mirror import TABLES, cache_root
from medshard.shards.random_access import ShardFiles
from medshard.shards.reader import Dataset, open_dataset, walk_shard
from medshard.shards.storage import is_url
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
    where = str(dataset / row["zarr_path"])  # named by the dataset's folder or URL
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


class _Copies:
    """Where verify reads a dataset's files: its directory, or for a dataset at a URL a
    scratch folder that each object is downloaded into once, checked, and removed from."""

    def __init__(self, ds: Dataset, scratch: Path | None):
        self.ds, self.mirror = ds, ds.mirror
        self.root = ds.path if scratch is None else scratch

    def fetch(self, name: str, sha256: str | None = None) -> str | None:
        """Download object `name` (a URL's) into the scratch folder; its sha256, or None
        for a file on disk."""
        if self.mirror is None:
            return None
        dest = self.root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        return self.mirror.store.download(name, dest, sha256)

    def fetch_group(self, zarr_path: str) -> None:
        if self.mirror is not None:
            for name in self.mirror.store.list(zarr_path + "/"):
                if not (self.root / name).is_file():
                    self.fetch(name)

    def drop(self, name: str) -> None:
        if self.mirror is not None:
            path = self.root / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

    def named(self, text: str) -> str:
        return text.replace(str(self.root), self.ds.location)

    def at(self, name: str) -> str:
        """File `name` of the dataset as a problem names it: under its folder or URL."""
        return f"{self.ds.location}/{name}"


def _check_files(copies: _Copies, problems: list[str]) -> None:
    """Every file the card checksums, but the manifest (checked before it is parsed) and,
    at a URL, the tables (checked when they were fetched)."""
    for name, expected in (copies.ds.card.checksums or {}).items():
        if name == MANIFEST_NAME or (copies.mirror is not None and name in TABLES):
            continue
        try:
            copies.fetch(name, expected)
            check_file(copies.root, name, expected)
        except DatasetError as exc:
            problems.append(copies.named(str(exc)))


def _unique_keys(manifest: list[dict]) -> list[str]:
    counts = Counter(row["key"] for row in manifest)
    duplicates = sorted(key for key, n in counts.items() if n > 1)
    if not duplicates:
        return []
    listed = ", ".join(repr(k) for k in duplicates[:10])
    more = f" and {len(duplicates) - 10} more" if len(duplicates) > 10 else ""
    return [f"{MANIFEST_NAME}: keys appear in more than one row: {listed}{more}"]


def _damaged_samples(copies: _Copies, shard: str, rows: list[dict]) -> list[str]:
    """Which samples of a shard that fails its checksum differ from their own checksums."""
    files = ShardFiles(copies.root)
    found = []
    try:
        for row in rows:
            if row["shard"] == shard and row["sample_sha256"] is not None:
                try:
                    files.read(shard, row["offset"], row["bytes"], row["key"], row["sample_sha256"])
                except DatasetError as exc:
                    found.append(copies.named(str(exc)))
    finally:
        files.close()
    return found


@contextlib.contextmanager
def _opened(dataset: str | Path, endpoint_url, cache_dir, report) -> Iterator[_Copies | None]:
    """The dataset and where its files are read; None when its manifest is already known
    to be damaged (a URL's is checked as it is fetched)."""
    if not is_url(dataset):
        yield _Copies(Dataset(dataset), None)
        return
    try:
        ds = open_dataset(dataset, cache_dir=cache_dir, endpoint_url=endpoint_url)
    except CorruptDataError as exc:  # a table that differs from the card
        report.problems.append(str(exc))
        yield None
        return
    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="verify-", dir=root) as scratch:
        yield _Copies(ds, Path(scratch))


def verify_dataset(
    dataset: str | Path,
    max_problems: int = 20,
    *,
    endpoint_url: str | None = None,
    cache_dir: str | Path | None = None,
) -> VerifyReport:
    """Check every file against the card's checksums, and every shard byte against the
    manifest and the DALI indexes; a dataset at a URL as its objects are now."""
    report = VerifyReport()
    with _opened(dataset, endpoint_url, cache_dir, report) as copies:
        if copies is not None:
            _verify(copies, report)
    del report.problems[max_problems:]
    return report


def _verify(copies: _Copies, report: VerifyReport) -> None:
    ds, root, at = copies.ds, copies.root, copies.at
    problems = report.problems
    _check_files(copies, problems)
    try:
        manifest = ds.manifest.to_pylist()
    except DatasetError as exc:  # nothing else can be checked against a damaged manifest
        problems.append(str(exc))
        return
    problems.extend(_unique_keys(manifest))
    rows = {row["key"]: row for row in manifest}
    seen: Counter[str] = Counter()

    for shard in ds.card.shards:
        path = root / shard.path
        report.shards += 1
        try:
            digest = copies.fetch(shard.path)
        except DatasetError:
            digest = None
        if not path.is_file():
            problems.append(f"{at(shard.path)}: shard file is missing")
            continue
        report.bytes += path.stat().st_size
        if (digest or file_sha256(path)) != shard.sha256:
            problems.append(f"{at(shard.path)}: checksum differs from the card")
            problems.extend(_damaged_samples(copies, shard.path, manifest))
        try:
            walked = _walk_shard(path)
        except (tarfile.TarError, EOFError, OSError, DatasetError) as exc:
            problems.append(f"{at(shard.path)}: shard is truncated or corrupt ({exc})")
            continue
        finally:
            copies.drop(shard.path)
        if len(walked) != shard.samples:
            problems.append(
                f"{at(shard.path)}: holds {len(walked)} samples, the card says {shard.samples}"
            )
        index_path = root / index_name(shard.path)
        try:
            index = read_dali_index(index_path)
            listed = [[(f, o, s) for f, o, s, _ in sample] for sample in index]
            actual = [[(f, o, s) for f, o, s, _ in sample["members"]] for sample in walked]
            if listed != actual:
                problems.append(f"{at(index_name(shard.path))}: index does not match the shard")
        except OSError as exc:
            problems.append(f"{at(index_name(shard.path))}: unreadable index ({exc.strerror})")
        except DatasetError as exc:
            problems.append(copies.named(str(exc)))
        for sample in walked:
            key = sample["key"]
            seen[key] += 1
            report.samples += 1
            row = rows.get(key)
            if row is None:
                problems.append(f"{at(shard.path)}: key {key!r} is not in the manifest")
                continue
            fields = [m[0] for m in sample["members"]]
            if row["shard"] != shard.path or row["offset"] != sample["offset"]:
                problems.append(f"{at(shard.path)}: key {key!r} is not where the manifest puts it")
            if row["members"] != fields:
                listed = row["members"]
                problems.append(
                    f"{at(shard.path)}: key {key!r} has members {fields}, manifest: {listed}"
                )
            image = next((m for m in sample["members"] if m[0].startswith("image.")), None)
            if ds.card.kind == "images" and image and image[3] != row["source_sha256"][0]:
                problems.append(
                    f"{at(shard.path)}: key {key!r} image bytes differ from the source checksum"
                )

    for key, row in rows.items():
        if row["zarr_path"] is not None:
            report.samples += 1
            try:
                copies.fetch_group(row["zarr_path"])
                problems.extend(copies.named(p) for p in _verify_zarr_sample(root, row))
            except DatasetError as exc:
                problems.append(copies.named(str(exc)))
            copies.drop(row["zarr_path"])
        if row["shard"] is not None and seen[key] == 0:
            problems.append(f"{at(row['shard'])}: key {key!r} from the manifest is missing")
        elif seen[key] > 1:
            problems.append(f"key {key!r} appears {seen[key]} times in the shards")
