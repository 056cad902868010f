"""The image probe on real pictures: non-finite pixels and decompression bombs are refused in
one sentence, memory stays near the decoded image, and mixed folders pool into unit-scale
statistics over the dataset's channels."""

import io
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import tifffile
from PIL import Image

from medshard.errors import BadInputError
from medshard.ingest.image_probe import probe_image
from medshard.shards.manifest import read_rejected
from medshard.shards.reader import open_dataset
from tests.conftest import ingest, write_table
from tests.real_data import mixed_tile_table
from tests.test_codecs import bomb_png

CAMERA = skimage.data.camera()[:96, :128]  # 8-bit gray


def float_camera(path: Path, bad: float | None = None) -> Path:
    """skimage's camera as a float32 TIFF in [0, 1], with one pixel set to `bad`."""
    pixels = CAMERA.astype(np.float32) / 255
    if bad is not None:
        pixels[40, 50] = bad
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, pixels)
    return path


def table_of(root: Path, names: list[str]) -> Path:
    rows = [[name, ("cleavage", "morula")[i % 2]] for i, name in enumerate(names)]
    return write_table(root / "labels.csv", ["image_path", "stage"], rows)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_pixel_is_refused(tmp_path, bad):
    path = float_camera(tmp_path / "camera.tif", bad)
    with pytest.raises(ValueError, match=r"^holds 1 non-finite pixels \(NaN or infinity\); "):
        probe_image(path)


def test_float_tiff_with_a_nan_fails_the_ingest_naming_the_file(tmp_path):
    raw = tmp_path / "raw"
    for i in range(3):
        float_camera(raw / f"cam{i}.tif", math.nan if i == 1 else None)
    table = table_of(raw, [f"cam{i}.tif" for i in range(3)])
    with pytest.raises(BadInputError, match=r"cam1\.tif: holds 1 non-finite pixels"):
        ingest(table, tmp_path / "ds", val_fraction=0.0)
    assert not (tmp_path / "ds").exists()


def test_float_tiff_with_a_nan_is_skipped_and_the_stats_stay_finite(tmp_path):
    raw = tmp_path / "raw"
    for i in range(3):
        float_camera(raw / f"cam{i}.tif", math.nan if i == 1 else None)
    table = table_of(raw, [f"cam{i}.tif" for i in range(3)])
    result = ingest(table, tmp_path / "ds", val_fraction=0.0, on_error="skip")
    assert result.samples == 2
    rejected = read_rejected(tmp_path / "ds").to_pylist()
    assert [Path(r["source"]).name for r in rejected] == ["cam1.tif"]
    assert "non-finite pixels" in rejected[0]["reason"]
    stats = open_dataset(tmp_path / "ds").card.stats
    values = stats.mean + stats.std + stats.min + stats.max
    assert all(math.isfinite(v) for v in values)
    assert stats.mean[0] == pytest.approx(CAMERA.mean() / 255, rel=1e-6)


def test_png_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(20_000, 20_000))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as refused:
            probe_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(refused.value) == (
        "declares 20000 x 20000 = 400,000,000 pixels, more than the limit of 89,478,485 "
        "against decompression bombs; if the image is genuine, raise --max-pixels"
    )
    assert peak < 10 * 2**20  # decoding it would take 400 MB, and float sums 3.2 GB more


def test_tiff_bomb_is_refused_before_decoding(tmp_path):
    tile = np.zeros((1024, 1024), np.uint8)
    path = tmp_path / "bomb.tif"
    tifffile.imwrite(
        path,
        (tile for _ in range(100)),
        shape=(10 * 1024, 10 * 1024),
        dtype=np.uint8,
        tile=(1024, 1024),
        compression="zlib",
    )
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"declares 10240 x 10240 = 104,857,600 pixels"):
            probe_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20


def test_bomb_fails_the_ingest_and_is_skipped_with_on_error_skip(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "bomb.png").write_bytes(bomb_png(20_000, 20_000))
    Image.fromarray(CAMERA).save(raw / "camera.png")
    table = table_of(raw, ["camera.png", "bomb.png"])
    with pytest.raises(BadInputError, match=r"bomb\.png: declares 20000 x 20000 = 400,000,000"):
        ingest(table, tmp_path / "ds", val_fraction=0.0)
    result = ingest(table, tmp_path / "ds", val_fraction=0.0, on_error="skip")
    assert result.samples == 1
    assert [Path(r["source"]).name for r in read_rejected(tmp_path / "ds").to_pylist()] == [
        "bomb.png"
    ]


def test_pixel_limit_is_a_parameter(tmp_path):
    path = tmp_path / "camera.png"
    Image.fromarray(CAMERA).save(path)
    assert probe_image(path, max_pixels=96 * 128).shape == (1, 96, 128)
    with pytest.raises(ValueError, match=r"declares 96 x 128 = 12,288 pixels, more than .* 12,287"):
        probe_image(path, max_pixels=96 * 128 - 1)


def test_probe_never_holds_a_float64_copy_of_the_image(tmp_path):
    retina = skimage.data.retina()  # 1411 x 1416 RGB: 6 MB decoded, 48 MB as float64
    path = tmp_path / "retina.png"
    Image.fromarray(retina).save(path, compress_level=1)
    tracemalloc.start()
    try:
        info = probe_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < path.stat().st_size + retina.nbytes + 12 * 2**20
    flat = retina.reshape(-1, 3).astype(np.float64) / 255
    assert info.stats.total == pytest.approx(flat.sum(axis=0))
    assert info.stats.total_sq == pytest.approx((flat**2).sum(axis=0))
    assert list(info.stats.minimum) == list(flat.min(axis=0))
    assert list(info.stats.maximum) == list(flat.max(axis=0))


def _unit_colour(path: Path) -> np.ndarray:
    """(pixels, 3) values of one tile read with PIL/tifffile, each divided by its bit
    depth's maximum, alpha dropped, gray repeated: the contract, computed independently."""
    if path.suffix == ".tif":
        array = tifffile.imread(path)
    else:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGBA") if image.mode == "P" else image)
    unit = array.astype(np.float64) / np.iinfo(array.dtype).max
    unit = unit.reshape(*array.shape[:2], -1)
    colour = unit[..., :1] if unit.shape[-1] < 3 else unit[..., :3]
    return np.broadcast_to(colour, (*colour.shape[:2], 3)).reshape(-1, 3)


def test_mixed_tile_folder_pools_unit_scale_stats_over_three_channels(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=2, size=32)
    result = ingest(table, tmp_path / "ds", label_col="stage", val_fraction=0.3, seed=1)
    ds = open_dataset(tmp_path / "ds")
    assert result.samples == 14 and ds.card.rejected == 0
    assert ds.card.channels == 3
    rows = ds.manifest.to_pylist()
    by_name = {Path(r["source"][0]).name: r for r in rows}
    assert by_name["coins_palette.png"]["shape"][0] == 3  # palette decoded as RGB
    assert by_name["astronaut_rgba8.png"]["shape"][0] == 4  # the sample keeps its alpha
    assert by_name["cell_gray16.png"]["dtype"] == "uint16"
    train = [r for r in rows if r["split"] == "train"]
    assert 0 < len(train) < len(rows)
    values = np.concatenate([_unit_colour(tmp_path / "raw" / r["source"][0]) for r in train])
    stats = ds.card.stats
    assert len(stats.mean) == len(stats.std) == 3
    assert stats.mean == pytest.approx(values.mean(axis=0).tolist(), abs=1e-9)
    assert stats.std == pytest.approx(values.std(axis=0).tolist(), abs=1e-9)
    assert stats.min == pytest.approx(values.min(axis=0).tolist())
    assert stats.max == pytest.approx(values.max(axis=0).tolist())
    assert min(stats.min) >= 0.0 and max(stats.max) <= 1.0


def test_same_picture_in_8_and_16_bit_gives_the_same_card_stats(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    Image.fromarray(CAMERA).save(raw / "camera8.png")
    buffer = io.BytesIO()
    Image.fromarray(CAMERA.astype(np.uint16) * 257).save(buffer, format="PNG")
    (raw / "camera16.png").write_bytes(buffer.getvalue())
    stats = {}
    for bits in (8, 16):
        table = write_table(raw / f"t{bits}.csv", ["image_path"], [[f"camera{bits}.png"]])
        stats[bits] = ingest(table, tmp_path / f"ds{bits}", val_fraction=0.0).card.stats
    assert stats[8].mean[0] == pytest.approx(CAMERA.mean() / 255, abs=1e-9)
    for field in ("mean", "std", "min", "max"):
        assert getattr(stats[16], field) == pytest.approx(getattr(stats[8], field), abs=1e-3)
