"""The Zarr v3 store of a dataset: one group per sample (`zarr/KEY/image`, and
`zarr/KEY/labels/mask`), sharded and compressed, with minimal OME-NGFF 0.5 attributes."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medshard.errors import CorruptDataError, DatasetError
from medshard.shards.layout import ZARR_DIR
from medshard.shards.zarr_layout import ZarrLayout, chunk_shape, encode_intensity, inner_codecs
from medshard.shards.zarr_shards import write_shard

__all__ = [
    "SPATIAL_UNIT",
    "array_sha256",
    "chunk_shape",
    "create_store",
    "write_sample",
    "ZarrLayout",
    "open_sample",
    "consolidate",
    "ZarrReader",
]

SPATIAL_UNIT = "millimeter"
_AXIS_TYPES = {"c": "channel", "t": "time", "z": "space", "y": "space", "x": "space"}
# tensorstore's status for a checksum mismatch, and for a chunk whose codec cannot decode it
_DAMAGED_STATUSES = ("DATA_LOSS", "FAILED_PRECONDITION")


def array_sha256(array: np.ndarray) -> str:
    """Checksum of an array's values: its C-order bytes with dtype and shape."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))  # no copy
    return digest.hexdigest()


def create_store(dataset_dir: str | Path) -> Path:
    """Create the root group `zarr/`; sample groups are added by independent tasks."""
    import zarr

    path = Path(dataset_dir) / ZARR_DIR
    zarr.open_group(str(path), mode="w", zarr_format=3)
    return path


# One colour per label value in napari and other OME-NGFF viewers (matplotlib's tab10).
_LABEL_COLOURS = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


def _ome(key: str, axes: str, scale: Sequence[float], path: str, unit: str | None) -> dict:
    """OME-NGFF 0.5 image attributes; none for an axis order that NGFF cannot describe
    (channels last, as in RGB video `tyxc`), so no viewer misreads the array."""
    order = [("time", "channel", "space").index(_AXIS_TYPES[a]) for a in axes]
    if order != sorted(order):
        return {"version": "0.5"}
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": key,
                "axes": [
                    {"name": a, "type": _AXIS_TYPES[a]}
                    | ({"unit": unit} if unit and _AXIS_TYPES[a] == "space" else {})
                    | ({"unit": "second"} if a == "t" else {})
                    for a in axes
                ],
                "datasets": [
                    {
                        "path": path,
                        "coordinateTransformations": [{"type": "scale", "scale": list(scale)}],
                    }
                ],
            }
        ],
    }


def _label_ome(key: str, axes: str, scale: Sequence[float], unit: str | None, mask) -> dict:
    """Attributes of `labels/`: the `labels` list, and, since the mask array sits directly
    in that group, the group is also the mask's label image (its multiscale entry and
    `image-label` with a colour per label value and the image as source), which is how
    ome-zarr's reader (napari's OME-Zarr plugin) opens it as a label layer."""
    ome = _ome(f"{key} mask", axes, scale, "mask", unit)
    small = mask.dtype.itemsize <= 2  # a count per value beats sorting for 8/16-bit masks
    values = np.flatnonzero(np.bincount(mask.ravel())) if small else np.unique(mask)
    colours = [
        {"label-value": int(v), "rgba": [*_LABEL_COLOURS[(int(v) - 1) % 10], 255]}
        for v in values
        if v
    ]
    return ome | {
        "labels": ["mask"],
        "image-label": {"version": "0.5", "colors": colours, "source": {"image": "../"}},
    }


def write_sample(
    dataset_dir: str | Path,
    key: str,
    image: np.ndarray,
    *,
    axes: str,
    spacing: Sequence[float],
    layout: ZarrLayout | Sequence[int],
    mask: np.ndarray | None = None,
    unit: str | None = SPATIAL_UNIT,
    attributes: dict | None = None,
    chunks: Sequence[int] | None = None,
) -> dict:
    """Write one sample's arrays whole (one task, one group: no two writers share a file)
    in `layout` (or the default layout for a bare patch size); `chunks` overrides its inner
    chunks. `spacing` is per non-channel axis. Returns zarr_path, bytes on disk, the stored
    image dtype and checksums of the stored values."""
    import zarr

    layout = ZarrLayout.of(layout)
    group_path = f"{ZARR_DIR}/{key}"
    root = zarr.open_group(str(Path(dataset_dir) / ZARR_DIR), mode="a", zarr_format=3)
    scale = [1.0 if a == "c" else float(s) for a, s in zip(axes, _with_channel(axes, spacing))]
    group = root.create_group(
        key,
        overwrite=True,
        attributes={"ome": _ome(key, axes, scale, "image", unit), "medshard": attributes or {}},
    )

    def put(parent, name: str, array: np.ndarray, array_axes: str, extra: dict) -> str:
        inner = chunk_shape(
            array.shape, array_axes, layout.patch, layout.codec, array.dtype.itemsize
        )
        inner = tuple(chunks) if chunks is not None else inner
        digest = array_sha256(array)
        parent.create_array(
            name,
            shape=array.shape,
            dtype=array.dtype,
            chunks=inner,
            shards=tuple(-(-d // c) * c for d, c in zip(array.shape, inner)),  # one shard
            compressors=inner_codecs(layout.codec, array.dtype),
            dimension_names=tuple(array_axes),
            attributes={"medshard": {"sha256": digest, **extra}},
        )
        # the whole array is one shard, written here (zarr-python's sharded write is slow)
        shard = Path(dataset_dir, ZARR_DIR, parent.path, name, "c", *["0"] * array.ndim)
        shard.parent.mkdir(parents=True, exist_ok=True)
        write_shard(shard, array, inner, layout.codec)
        return digest

    channel_first = axes.startswith("c")
    stored, extra = encode_intensity(image, layout.intensity if channel_first else "source", key)
    checksums = {"image": put(group, "image", stored, axes, extra)}
    if mask is not None:
        mask_axes = axes.replace("c", "")
        mask_scale = [s for a, s in zip(axes, scale) if a != "c"]
        labels = group.create_group(
            "labels", attributes={"ome": _label_ome(key, mask_axes, mask_scale, unit, mask)}
        )
        checksums["mask"] = put(labels, "mask", mask, mask_axes, {})
    on_disk = sum(
        p.stat().st_size for p in (Path(dataset_dir) / group_path).rglob("*") if p.is_file()
    )
    return {
        "zarr_path": group_path,
        "bytes": on_disk,
        "dtype": str(stored.dtype),
        "sha256": checksums,
    }


def _with_channel(axes: str, spacing: Sequence[float]) -> list[float]:
    values = iter(spacing)
    return [1.0 if a == "c" else next(values) for a in axes]


def open_sample(dataset_dir: str | Path, zarr_path: str):
    """(image, mask or None) of one sample as lazy zarr arrays."""
    import zarr

    where = Path(dataset_dir) / zarr_path
    try:
        group = zarr.open_group(str(where), mode="r", zarr_format=3)
        image = group["image"]
        mask = group["labels/mask"] if "labels" in group else None
    except (FileNotFoundError, KeyError) as exc:
        raise DatasetError(f"{where}: the sample's arrays are missing") from exc
    except Exception as exc:  # zarr raises JSON, Unicode and validation errors for bad bytes
        raise CorruptDataError(
            f"{where}: the sample's Zarr metadata is damaged and cannot be read ({exc})"
        ) from exc
    return image, mask


class ZarrReader:
    """Region reads from the store through tensorstore's zarr3 driver: C++ with parallel
    chunk decoding, several times faster than zarr-python for patch-sized reads. Opened
    arrays are kept; one reader per worker process."""

    def __init__(self, dataset_dir: str | Path, threads: int = 2):
        self.root = Path(dataset_dir)
        self.threads = threads
        self._arrays: dict[str, object] = {}
        self._context = None

    def array(self, path: str):
        """The tensorstore array at `path` (e.g. 'zarr/KEY/image'), opened once."""
        found = self._arrays.get(path)
        if found is None:
            import tensorstore as ts

            if self._context is None:
                self._context = ts.Context({"data_copy_concurrency": {"limit": self.threads}})
            spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(self.root / path)}}
            try:
                found = ts.open(spec, read=True, context=self._context).result()
            except ValueError as exc:
                raise DatasetError(f"{self.root / path}: cannot open the array ({exc})") from exc
            self._arrays[path] = found
        return found

    def forget(self, group: str) -> None:
        """Close the arrays opened under folder `group` (a sample's, replaced on disk)."""
        for path in [p for p in list(self._arrays) if Path(p).is_relative_to(group)]:
            self._arrays.pop(path, None)  # other threads open and forget arrays meanwhile

    def read(self, path: str, selection: tuple = ()) -> np.ndarray:
        """The values of `selection` of the array at `path`; a chunk that fails its crc32c
        or does not decode raises CorruptDataError."""
        try:
            return self.array(path)[selection].read().result()
        except ValueError as exc:
            message = str(exc)
            if not message.startswith(_DAMAGED_STATUSES):
                raise
            raise CorruptDataError(
                f"{self.root / path}: a stored chunk is damaged or was changed after ingest "
                f"({message})"
            ) from exc

    def __getstate__(self):  # open arrays do not cross into worker processes
        return {"root": self.root, "threads": self.threads, "_arrays": {}, "_context": None}


def consolidate(dataset_dir: str | Path) -> None:
    """Gather every group's metadata into the root, so opening the store is one read."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is a zarr-python extension in v3
        zarr.consolidate_metadata(str(Path(dataset_dir) / ZARR_DIR))
