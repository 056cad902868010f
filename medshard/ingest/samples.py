"""One sample as a source format reads it (an EncodedImage kept as its bytes, or a
LoadedVolume of arrays), the job that names it, and the Dask task that reads, checks and
stores each job's sample in the staging folder."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medshard.errors import BadInputError
from medshard.ingest.build import MemberSource
from medshard.ingest.stats import SampleStats, sample_stats
from medshard.ingest.volume_read import check_volume
from medshard.shards.zarr_layout import IntensityError
from medshard.shards.zarr_store import write_sample

__all__ = ["SCRATCH", "EncodedImage", "Job", "LoadedVolume", "read_jobs"]

_FOREGROUND_POINTS = 256  # voxel coordinates kept per sample and mask label
SCRATCH = ".scratch"  # members waiting for their shard, inside the staging folder


@dataclass(frozen=True)
class EncodedImage:
    """A sample kept as its original encoded bytes in a shard (2D images)."""

    path: str | None  # the file whose bytes are stored; None: they are in `data`
    source: str  # how the manifest names it (the path as the table gives it)
    ext: str  # member extension: png, jpg or tif
    sha256: str
    nbytes: int
    shape: tuple[int, ...]  # (channels, height, width)
    dtype: str
    stats: SampleStats
    extra: tuple[tuple[str, bytes], ...] = ()  # more members made from it (training copy)
    data: bytes | None = None  # the encoded bytes, when no file of their own holds them


@dataclass(frozen=True)
class LoadedVolume:
    """A sample decoded to arrays, stored in the Zarr store (volumes, videos)."""

    image: np.ndarray  # (c, z, y, x) for volumes, (t, y, x[, c]) for video
    mask: np.ndarray | None  # (z, y, x)
    spacing: tuple[float, ...]  # per non-channel axis
    unit: str | None  # of the spatial axes; None: pixels (video)
    sources: list[tuple[str, list[Path]]]  # (what the manifest lists, the files behind it)
    attributes: dict = field(default_factory=dict)
    axes: str = "czyx"
    chunks: tuple[int, ...] | None = None  # None: from the patch size
    manifest: dict = field(default_factory=dict)  # extra manifest fields (fps, timestamps)


@dataclass(frozen=True)
class Job:
    """One sample to ingest, as its source format found it."""

    row: int  # data row of the input table, -1 when the sample has none
    key: str
    source: str  # how a message names the sample
    group: str
    split: str | None
    parsed: dict  # label fields
    files: tuple[str, ...]  # the files and folders it reads (their sizes and times count)
    read: Callable[..., EncodedImage | LoadedVolume]  # module-level, so that it pickles
    args: tuple
    fold: int = -1  # kept when every job brings its split


def _digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _volume_record(key: str, volume: LoadedVolume, dataset_dir: str, layout, spacing) -> dict:
    """Check and write one volume or video in `layout` (a ZarrLayout: patch size, codec,
    stored intensity type; a bare patch size takes the default layout)."""
    channel_first = _channel_first(volume)
    mask = volume.mask
    spacing = tuple(spacing or volume.spacing)
    written = write_sample(
        dataset_dir,
        key,
        volume.image,
        axes=volume.axes,
        spacing=spacing,
        layout=layout,
        mask=mask,
        unit=volume.unit,
        attributes=volume.attributes,
        chunks=volume.chunks,
    )
    return {
        "zarr_path": written["zarr_path"],
        "bytes": written["bytes"],
        "shape": list(volume.image.shape),
        "dtype": written["dtype"],
        "spacing": list(spacing),
        "source": [name for name, _ in volume.sources],
        "source_sha256": [_digest(files) for _, files in volume.sources],
        "source_bytes": sum(p.stat().st_size for _, files in volume.sources for p in files),
        "masked": mask is not None,
        "stats": sample_stats(channel_first, seed=_seed(key)),
        "foreground": _foreground(key, mask),
        **volume.manifest,
    }


def _channel_first(volume: LoadedVolume) -> np.ndarray:
    if "c" in volume.axes:
        return np.moveaxis(volume.image, volume.axes.index("c"), 0)
    return volume.image[None]


def _checked(volume: LoadedVolume) -> LoadedVolume:
    """The volume with its mask checked against the image and in its smallest type."""
    mask = check_volume(_channel_first(volume), volume.mask)
    return LoadedVolume(**{**volume.__dict__, "mask": mask})


def _seed(key: str) -> int:
    """A sample's own random seed, the same on every machine and Python version."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


def _foreground(key: str, mask: np.ndarray | None) -> dict[int, np.ndarray]:
    """A bounded sample of voxel coordinates per mask label, for foreground sampling."""
    if mask is None:
        return {}
    rng = np.random.default_rng(_seed(key))
    points = {}
    for label in np.unique(mask):
        if label == 0:
            continue
        coords = np.argwhere(mask == label)
        keep = rng.choice(len(coords), size=min(_FOREGROUND_POINTS, len(coords)), replace=False)
        points[int(label)] = coords[np.sort(keep)].astype(np.int32)
    return points


def _image_record(key: str, image: EncodedImage, dataset_dir: str) -> dict:
    """A source file's bytes stay where they are; bytes made in the task wait in the
    staging folder's scratch space until their shard is written, not in memory."""

    def scratch(name: str, data: bytes) -> MemberSource:
        path = Path(dataset_dir) / SCRATCH / f"{key}.{name}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        return MemberSource(str(path), hashlib.sha256(data).hexdigest())

    name = f"image.{image.ext}"
    if image.path is None:
        member = (name, scratch(name, image.data))
    else:
        member = (name, MemberSource(image.path, image.sha256))
    extra = [(field, scratch(field, data)) for field, data in image.extra]
    return {
        "member": member,
        "extra": extra,
        "extra_bytes": sum(len(data) for _, data in image.extra),
        "bytes": image.nbytes,
        "shape": list(image.shape),
        "dtype": image.dtype,
        "spacing": None,
        "source": [image.source],
        "source_sha256": [image.sha256],
        "source_bytes": image.nbytes,
        "stats": image.stats,
    }


def read_jobs(jobs: list[Job], dataset_dir: str, layout, spacing) -> list[dict]:
    """Dask task: read, check and store each job's sample. A refusal of the input comes
    back as its reason and the source it names; a failure to store (a full disk, say)
    is no refusal: it stops the ingest."""
    records = []
    for job in jobs:
        try:
            data = job.read(*job.args)
            if isinstance(data, LoadedVolume):
                data = _checked(data)
        except BadInputError as exc:
            records.append({"refused": exc.reason, "source": exc.source})
            continue
        except (ValueError, OSError) as exc:
            records.append({"refused": str(exc), "source": job.source})
            continue
        try:
            if isinstance(data, EncodedImage):
                records.append(_image_record(job.key, data, dataset_dir))
            else:
                records.append(_volume_record(job.key, data, dataset_dir, layout, spacing))
        except BadInputError as exc:  # a value the stored layout cannot hold
            records.append({"refused": exc.reason, "source": exc.source})
        except IntensityError as exc:  # intensities the chosen stored type cannot hold
            records.append({"refused": str(exc), "source": job.source})
    return records
