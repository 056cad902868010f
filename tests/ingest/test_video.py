import io
import json

import av
import numpy as np
import pytest
from PIL import Image

from medshard.errors import BadInputError
from medshard.ingest.video import VideoIngestOptions, fit_frame, ingest_video
from medshard.shards.reader import open_dataset
from medshard.shards.verify import verify_dataset
from medshard.shards.zarr_store import open_sample
from medshard.synth.video import write_mp4
from tests.conftest import write_table
from tests.test_codecs import bomb_png

FRAMES = 10


def sequence(seed: int, size=(36, 48)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size, dtype=np.uint8)
    return [np.roll(base, 2 * t, axis=1) for t in range(FRAMES)]


@pytest.fixture
def raw(tmp_path):
    """Two mp4 videos and two frame folders (frame_2 before frame_10: natural order)."""
    root = tmp_path / "raw"
    rows = []
    for i in range(4):
        if i % 2 == 0:
            (root / "videos").mkdir(parents=True, exist_ok=True)
            write_mp4(root / f"videos/v{i}.mp4", sequence(i))
            rows.append([f"videos/v{i}.mp4", ("slow", "fast")[i % 2 == 0 and i > 0], f"e{i}"])
        else:
            folder = root / f"frames/f{i}"
            folder.mkdir(parents=True)
            for t, frame in enumerate(sequence(i)):
                Image.fromarray(frame).save(folder / f"frame_{t}.png")
            rows.append([f"frames/f{i}", "slow", f"e{i}"])
    return write_table(root / "index.csv", ["video_path", "speed", "embryo"], rows)


def run(table, out, **options):
    defaults = dict(
        video_col="video_path",
        label_col="speed",
        size=(24, 32),
        workers=1,
        processes=False,
        quiet=True,
        val_fraction=0.0,
    )
    return ingest_video(VideoIngestOptions(table=table, out=out, **{**defaults, **options}))


def stored(out, key):
    row = next(r for r in open_dataset(out).manifest.to_pylist() if r["key"] == key)
    return row, open_sample(out, row["zarr_path"])[0][...]


@pytest.mark.parametrize("fit", ["pad", "crop", "stretch"])
def test_video_frames_equal_pyavs_own_decode_after_the_same_resize(tmp_path, raw, fit):
    run(raw, tmp_path / "ds", fit=fit)
    row, frames = stored(tmp_path / "ds", "videos_v2")
    with av.open(str(tmp_path / "raw/videos/v2.mp4")) as container:
        expected = [
            fit_frame(f.to_ndarray(format="rgb24"), 1, (24, 32), fit)
            for f in container.decode(video=0)
        ]
    assert frames.shape == (FRAMES, 24, 32) and row["shape"] == [FRAMES, 24, 32]
    assert np.array_equal(frames, np.stack(expected))
    assert row["fps"] == 4.0 and row["timestamps"] == pytest.approx([t / 4 for t in range(FRAMES)])


def test_frame_folders_in_natural_order_with_rgb(tmp_path, raw):
    run(raw, tmp_path / "ds", channels=3, fit="stretch")
    row, frames = stored(tmp_path / "ds", "frames_f1")
    expected = np.stack([fit_frame(f, 3, (24, 32), "stretch") for f in sequence(1)])
    assert frames.shape == (FRAMES, 24, 32, 3) and np.array_equal(frames, expected)
    assert row["fps"] is None and row["timestamps"] == [float(t) for t in range(FRAMES)]


def test_fit_pad_keeps_the_aspect_ratio_inside_zero_borders():
    frame = np.full((20, 40), 200, np.uint8)
    padded = fit_frame(frame, 1, (20, 20), "pad")
    assert padded.shape == (20, 20) and padded[0].max() == 0 and padded[10, 10] == 200
    assert fit_frame(frame, 1, (20, 20), "crop").min() == 200


def test_clip_boundaries_and_stride(tmp_path, raw):
    run(raw, tmp_path / "ds", clip_len=4, clip_stride=3)
    ds = open_dataset(tmp_path / "ds")
    clips = list(ds.samples("train"))
    assert len(clips) == 4 * 3  # starts 0, 3, 6 in 10 frames
    by_source = {}
    for clip in clips:
        about = json.loads(clip["json"])
        by_source.setdefault(about["source_key"], []).append(about["frames"])
        array = np.load(io.BytesIO(clip["image.npy"]))
        _, frames = stored(tmp_path / "ds", about["source_key"])
        start, stop = about["frames"]
        assert array.shape == (4, 1, 24, 32) and np.array_equal(array[:, 0], frames[start:stop])
    assert all(v == [[0, 4], [3, 7], [6, 10]] for v in by_source.values())
    assert verify_dataset(ds.path).ok


def test_ingest_on_two_worker_processes(tmp_path, raw):
    result = run(raw, tmp_path / "ds", workers=2, processes=True, clip_len=5)
    assert (
        result.samples == 4 and result.frames == 4 * FRAMES and verify_dataset(tmp_path / "ds").ok
    )


def truncated(root):
    path = root / "videos/v2.mp4"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def corrupt(root):
    (root / "videos/v2.mp4").write_bytes(b"\x00" * 2000)


def no_frames(root):
    container = av.open(str(root / "videos/v2.mp4"), mode="w", format="matroska")
    stream = container.add_stream("libx264", rate=4)
    stream.width, stream.height = 32, 32
    stream.pix_fmt = "yuv420p"
    container.start_encoding()  # header and trailer, not one frame
    container.close()


def frame_sizes(root):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "frames/f1/frame_7.png")


def short(root):
    for t in range(3, FRAMES):
        (root / f"frames/f1/frame_{t}.png").unlink()


def bomb_frame(root):
    (root / "frames/f1/frame_7.png").write_bytes(bomb_png(20_000, 20_000))


def missing(root):
    (root / "videos/v0.mp4").unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            truncated,
            r"v2\.mp4: (cannot decode the video, it is truncated or corrupt"
            r"|the video is truncated)",
        ),
        (corrupt, r"v2\.mp4: cannot decode the video, it is truncated or corrupt"),
        (no_frames, r"v2\.mp4: the video has no frames"),
        (
            frame_sizes,
            r"f1: frames differ in size: frame_0\.png is \(36, 48\), frame_7\.png is \(10, 10\)",
        ),
        (short, r"f1: has 3 frames, fewer than the clip length 4"),
        (bomb_frame, r"f1: frame frame_7\.png declares 400,000,000 pixels, more than the limit"),
        (missing, r"v0\.mp4: file not found \(.*index\.csv row 1\)"),
    ],
    ids=[
        "truncated",
        "corrupt",
        "no-frames",
        "frame-sizes",
        "shorter-than-clip",
        "bomb",
        "missing",
    ],
)
def test_bad_videos_are_refused_and_nothing_is_written(tmp_path, raw, damage, message):
    damage(tmp_path / "raw")
    with pytest.raises(BadInputError, match=message):
        run(raw, tmp_path / "ds", clip_len=4)
    assert not (tmp_path / "ds").exists()
    assert [p for p in tmp_path.iterdir() if ".partial-" in p.name] == []


def test_skip_keeps_the_good_videos(tmp_path, raw):
    corrupt(tmp_path / "raw")
    result = run(raw, tmp_path / "ds", on_error="skip")
    assert result.samples == 3 and result.card.rejected == 1
