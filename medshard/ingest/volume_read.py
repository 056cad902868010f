"""Read one volume from its raw files: TIFF stacks (tifffile) and NIfTI or .npy volumes
(nibabel, reoriented to the closest canonical RAS+ orientation)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "TIFF_SUFFIXES",
    "check_volume",
    "read_nifti_volume",
    "read_tiff_stack",
    "same_grid",
    "spacing_from_affine",
]

TIFF_SUFFIXES = (".tif", ".tiff")
_LARGEST_LABEL = 2**32 - 1  # masks are stored as uint32 at most


def _tiff_files(folder: Path) -> list[Path]:
    from natsort import natsorted

    return natsorted((p for p in folder.iterdir() if p.suffix.lower() in TIFF_SUFFIXES), key=str)


# OME length units in micrometres, the unit of TIFF datasets.
_MICROMETRES = {
    "pm": 1e-6,
    "Å": 1e-4,
    "nm": 1e-3,
    "µm": 1.0,
    "um": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}


def _ome_spacing(ome: dict) -> tuple[float, float, float] | None:
    """(z, y, x) in micrometres from the first image's Pixels element, when it has X and Y."""
    image = ome.get("OME", {}).get("Image", {})
    pixels = (image[0] if isinstance(image, list) else image).get("Pixels", {})

    def size(axis: str) -> float | None:
        value = pixels.get(f"PhysicalSize{axis}")
        if value is None:
            return None
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")  # OME's default unit
        return float(value) * _MICROMETRES.get(unit, 1.0)

    x, y, z = size("X"), size("Y"), size("Z")
    return None if x is None or y is None else (z or 1.0, y, x)


def _tiff_spacing(path: Path) -> tuple[float, float, float] | None:
    """(z, y, x) spacing from OME-XML or ImageJ metadata, when the file has any."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.is_ome and tif.ome_metadata:
            spacing = _ome_spacing(tifffile.xml2dict(tif.ome_metadata))
            if spacing is not None:
                return spacing
        if tif.is_imagej:
            page = tif.pages.first

            def per_pixel(tag: str) -> float:
                value = page.tags.get(tag)
                if value is None:
                    return 1.0
                num, den = value.value
                return den / num if num else 1.0

            z = float((tif.imagej_metadata or {}).get("spacing", 1.0))
            return (z, per_pixel("YResolution"), per_pixel("XResolution"))
    return None


def read_tiff_stack(source: Path) -> tuple[np.ndarray, tuple[float, float, float] | None, list]:
    """A (z, y, x) stack from a folder of per-slice TIFFs (naturally sorted) or one
    multi-page TIFF; with the spacing in its metadata, if any, and the files read."""
    import tifffile

    if source.is_dir():
        files = _tiff_files(source)
        if not files:
            raise ValueError("the slice folder holds no TIFF files")
        shapes = {}
        for f in files:
            with tifffile.TiffFile(f) as tif:
                shapes[f] = tif.pages.first.shape
        odd = next((f for f in files if shapes[f] != shapes[files[0]]), None)
        if odd is not None:
            raise ValueError(
                f"slices differ in shape: {files[0].name} is {shapes[files[0]]}, "
                f"{odd.name} is {shapes[odd]}"
            )
        stack = tifffile.imread(files) if len(files) > 1 else tifffile.imread(files[0])[None]
    else:
        files = [source]
        stack = tifffile.imread(source)
    _check_values(stack)
    if stack.ndim == 2 or stack.shape[0] == 1:
        raise ValueError("holds one 2D slice, not a volume")
    if stack.ndim != 3:
        raise ValueError(f"holds an array of shape {stack.shape}, not a (z, y, x) stack")
    return stack, _tiff_spacing(files[0]), files


class _NotNifti(ValueError):
    """A file that nibabel reads as something other than a volume in space (CIFTI)."""


def read_nifti_volume(path: Path, *, is_mask: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data in canonical (x, y, z) order, canonical affine, original affine).
    Images get scl_slope/inter applied; masks are read unscaled. A `.npy` file holds an
    (x, y, z) array already in RAS+ order, with unit spacing. The data keeps the memory
    order of the file: NIfTI stores x fastest, so `data.transpose(2, 1, 0)`, the (z, y, x)
    order medshard stores, is usually C-contiguous without a copy (a copy to C order here
    and another to (z, y, x) there took a third of a volume's ingest)."""
    import nibabel as nib
    from nibabel.affines import voxel_sizes
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    try:
        if path.suffix == ".npy":
            raw = np.load(path, allow_pickle=False)
            affine = np.eye(4)
        else:
            img = nib.load(path)
            if getattr(img, "affine", None) is None:  # CIFTI: a matrix over brain models
                raise _NotNifti(
                    f"it is a {type(img).__name__.removesuffix('Image')} file, not a volume "
                    "with an affine"
                )
            affine = img.affine
            proxy = img.dataobj
            if is_mask:
                raw = proxy.get_unscaled() if hasattr(proxy, "get_unscaled") else np.asarray(proxy)
            else:
                # nibabel moves scl_slope/inter from the header into the proxy on load
                scaled = getattr(proxy, "slope", 1.0) != 1.0 or getattr(proxy, "inter", 0.0) != 0.0
                raw = img.get_fdata(dtype=np.float32) if scaled else np.asarray(proxy)
    except _NotNifti:
        raise
    except Exception as exc:  # nibabel, gzip and zlib each raise their own errors
        raise ValueError(f"cannot read the volume, it is truncated or corrupt ({exc})") from exc
    _check_values(raw)
    if raw.ndim == 4 and raw.shape[3] == 1:
        raw = raw[..., 0]
    if raw.ndim == 2 or (raw.ndim == 3 and 1 in raw.shape):
        raise ValueError(f"is 2D (shape {raw.shape}), not a volume")
    if raw.ndim != 3:
        raise ValueError(f"has shape {raw.shape}; one 3D volume per file is expected")
    sizes = voxel_sizes(affine)
    if not (np.all(np.isfinite(sizes)) and np.all(sizes > 0)):
        shown = ", ".join(f"{v:g}" for v in sizes)
        raise ValueError(
            f"its affine gives a voxel size of zero or not a number ({shown}), "
            "so its orientation and spacing are undefined; fix the header's pixdim/srow"
        )
    ornt = io_orientation(affine)
    canonical = apply_orientation(raw, ornt)
    return canonical, affine @ inv_ornt_aff(ornt, raw.shape), affine


def _check_values(array: np.ndarray) -> None:
    """Refuse arrays that hold no voxels, or values that are not real numbers (complex,
    RGB records): medshard stores intensities and labels."""
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"holds {array.dtype} values; volumes of real numbers (integers or floats) are read"
        )
    if array.size == 0:
        raise ValueError(f"holds no voxels (shape {array.shape})")


def check_volume(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    """Refuse NaN/Inf voxels and masks that are not integers of the image's shape;
    return the mask as the smallest unsigned integer type that holds it."""
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise ValueError(f"holds {bad} NaN or Inf voxels")
    if mask is None:
        return None
    if mask.shape != image.shape[1:]:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape[1:]}")
    if mask.dtype.kind == "f" and (
        not np.isfinite(mask).all() or not np.array_equal(mask, np.round(mask))
    ):
        raise ValueError("the mask holds non-integer values")
    if mask.size and mask.min() < 0:
        raise ValueError("the mask holds negative labels")
    top = int(mask.max()) if mask.size else 0
    if top > _LARGEST_LABEL:
        raise ValueError(f"the mask holds label {top}, above the largest label {_LARGEST_LABEL}")
    return mask.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32)


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """(z, y, x) voxel sizes of a canonical (x, y, z) affine."""
    from nibabel.affines import voxel_sizes

    x, y, z = voxel_sizes(affine)
    return (float(z), float(y), float(x))


def same_grid(a: Sequence, b: Sequence, shape_a, shape_b, tolerance: float = 1e-3) -> bool:
    """Whether two volumes share shape and affine (within `tolerance`)."""
    return tuple(shape_a) == tuple(shape_b) and np.allclose(a, b, atol=tolerance)
