"""Real files that ship inside packages, laid out as users lay out their raw data.

scikit-image's sample images (IHC, retina, cells, a multi-page TIFF), nibabel's test
volumes (anatomical and functional MRI, a non-canonical affine, small volumes) and an mp4
written with PyAV; mixed as users mix them: gray beside RGB, RGBA and palette, 8 beside
16 bit, volumes smaller than a patch, odd counts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import nibabel as nib
import numpy as np
import skimage.data
import tifffile
from PIL import Image

from tests.conftest import write_table

SKIMAGE_DATA = Path(skimage.data.__file__).parent
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"

# Each tile kind of a mixed folder: (file name, how it is made from real pixels).
MIXED_TILES = (
    "ihc_rgb8.png",  # immunohistochemistry, RGB 8-bit
    "camera_gray8.png",  # cameraman, grayscale 8-bit
    "cell_gray16.png",  # cell, grayscale 16-bit
    "astronaut_rgba8.png",  # astronaut with an alpha channel
    "coins_palette.png",  # coins, palette (P mode)
    "retina_rgb8.jpg",  # retina fundus, JPEG as shipped
    "moon_gray16.tif",  # moon, 16-bit TIFF
)


def _crop(array: np.ndarray, size: int) -> np.ndarray:
    return np.ascontiguousarray(array[:size, :size])


def write_mixed_tiles(folder: Path, size: int = 64) -> list[str]:
    """Tiles of one size cut from skimage's images, in every channel layout and bit depth
    a real tile folder mixes; returns the file names in MIXED_TILES order."""
    folder.mkdir(parents=True, exist_ok=True)
    gray16 = _crop(skimage.data.cell(), size).astype(np.uint16) * 257
    Image.fromarray(_crop(skimage.data.immunohistochemistry(), size)).save(folder / MIXED_TILES[0])
    Image.fromarray(_crop(skimage.data.camera(), size)).save(folder / MIXED_TILES[1])
    Image.fromarray(gray16).save(folder / MIXED_TILES[2])
    rgb = _crop(skimage.data.astronaut(), size)
    alpha = np.full(rgb.shape[:2] + (1,), 200, np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], axis=2), mode="RGBA").save(folder / MIXED_TILES[3])
    Image.fromarray(_crop(skimage.data.coins(), size)).convert("P").save(folder / MIXED_TILES[4])
    Image.fromarray(_crop(skimage.data.retina(), size)).save(folder / MIXED_TILES[5], quality=92)
    tifffile.imwrite(
        folder / MIXED_TILES[6], _crop(skimage.data.moon(), size).astype(np.uint16) * 257
    )
    return list(MIXED_TILES)


def mixed_tile_table(root: Path, copies: int = 3, size: int = 64) -> Path:
    """`root/labels.csv` (image_path,stage,patient) over `copies` of every mixed tile kind
    (7 kinds x 3 = 21 rows by default: an odd count)."""
    rows = []
    for copy in range(copies):
        for i, name in enumerate(write_mixed_tiles(root / f"batch{copy}", size)):
            rows.append(
                [f"batch{copy}/{name}", ("cleavage", "morula", "blastocyst")[i % 3], f"P{i}"]
            )
    return write_table(root / "labels.csv", ["image_path", "stage", "patient"], rows)


def mixed_size_table(root: Path, names=("camera_gray8.png",), sizes=(20, 64)) -> Path:
    """A table of the tiles `names` cut at each of `sizes` (labels 'a', 'b', ... by
    tile): a split of images of several sizes."""
    rows = []
    for size in sizes:
        write_mixed_tiles(root / f"s{size}", size)
        rows += [[f"s{size}/{name}", "ab"[i % 2]] for i, name in enumerate(names)]
    return write_table(root / "labels.csv", ["image_path", "stage"], rows)


def copy_skimage_file(name: str, dest: Path) -> Path:
    """Copy one file that ships with scikit-image (e.g. 'multipage.tif') to `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SKIMAGE_DATA / name, dest)
    return dest


def copy_nibabel_file(name: str, dest: Path) -> Path:
    """Copy one of nibabel's test volumes (e.g. 'anatomical.nii') to `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(NIBABEL_DATA / name, dest)
    return dest


# nibabel's 3D test volumes: (file, shape as stored). anatomical is LAS with 25 slices;
# reoriented_anat_moved has a non-canonical affine; standard is tiny (4 x 5 x 7).
REAL_VOLUMES = {
    "anatomical": "anatomical.nii",
    "reoriented": "reoriented_anat_moved.nii",
    "standard": "standard.nii.gz",
}


def real_nifti_table(root: Path, names=("anatomical", "reoriented", "standard")) -> Path:
    """`root/subjects.csv` (subject,image,seg,group) over nibabel's real 3D volumes, each
    with a mask thresholded from its own intensities on its own grid."""
    rows = []
    for i, name in enumerate(names):
        image_file = copy_nibabel_file(REAL_VOLUMES[name], root / f"{name}{_suffix(name)}")
        img = nib.load(image_file)
        data = np.asarray(img.dataobj, dtype=np.float32)
        mask = (data > np.percentile(data, 75)).astype(np.uint8)
        nib.save(nib.Nifti1Image(mask, img.affine), root / f"{name}_seg.nii.gz")
        rows.append([name, image_file.name, f"{name}_seg.nii.gz", ("young", "old")[i % 2]])
    return write_table(root / "subjects.csv", ["subject", "image", "seg", "group"], rows)


def ingest_real_mri(root: Path) -> Path:
    """`real_nifti_table` under `root/raw`, ingested on one thread into `root/ds` (one
    modality and its mask, keyed by subject, every volume in train)."""
    from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti

    options = dict(modalities=("image",), mask_col="seg", key_col="subject")
    quiet = dict(workers=1, processes=False, quiet=True, val_fraction=0.0)
    table = real_nifti_table(root / "raw")
    ingest_nifti(NiftiIngestOptions(table=table, out=root / "ds", **options, **quiet))
    return root / "ds"


def _suffix(name: str) -> str:
    return ".nii.gz" if REAL_VOLUMES[name].endswith(".gz") else ".nii"


def write_mp4(
    path: Path, frames: int = 31, size: tuple[int, int] = (64, 80), fps: int = 10
) -> np.ndarray:
    """An H.264 mp4 written with PyAV whose frames pan across skimage's cell image (an odd
    frame count); returns the grayscale frames written."""
    cell = skimage.data.cell()
    height, width = size
    planes = np.stack([cell[2 * t : 2 * t + height, 3 * t : 3 * t + width] for t in range(frames)])
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for plane in planes:
            frame = av.VideoFrame.from_ndarray(
                np.repeat(plane[:, :, None], 3, axis=2), format="rgb24"
            )
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return planes
