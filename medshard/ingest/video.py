"""`medshard ingest video`: an index table naming time-lapse videos (mp4, avi, mov: PyAV)
or frame folders (PNG, JPEG, TIFF, naturally sorted), into Zarr `(t, y, x[, c])` arrays
and, with `--clip-len`, clips of T frames in WebDataset shards."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from PIL import Image
from pydantic import Field, ValidationInfo, field_validator

from medshard.codecs import IMAGE_EXTENSIONS, MAX_PIXELS, declared_shape, decode_image
from medshard.errors import BadInputError
from medshard.ingest.options import PositiveInt, TableIngestOptions, VolumeIngestOptions
from medshard.ingest.pipeline import Job, LoadedVolume, Recipe, run_ingest
from medshard.ingest.result import IngestResult
from medshard.ingest.table import (
    LabelSpec,
    check_rows,
    read_table,
    require_columns,
    row_file,
    row_key,
)
from medshard.ingest.windows import WindowSpec

__all__ = ["VIDEO_SUFFIXES", "VideoIngestOptions", "ingest_video", "load_video", "fit_frame"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
Fit = Literal["pad", "crop", "stretch"]
FrameSide = Annotated[int, Field(gt=0, le=8192)]  # stored frames are at most 8192 px a side


class VideoIngestOptions(VolumeIngestOptions, TableIngestOptions):
    video_col: str
    label_col: str | None = None
    label_cols: tuple[str, ...] = ()
    target_col: str | None = None
    classes: tuple[str, ...] = ()
    channels: Literal[1, 3] = 1
    size: tuple[FrameSide, FrameSide] = (128, 128)
    fit: Fit = "pad"
    clip_len: PositiveInt | None = None
    clip_stride: PositiveInt | None = None  # default: clip_len (back to back)

    @field_validator("clip_stride")
    @classmethod
    def _stride_needs_clips(cls, stride: int | None, info: ValidationInfo) -> int | None:
        if stride is not None and not info.data.get("clip_len"):
            raise ValueError("a clip stride needs --clip-len")
        return stride


def fit_frame(frame: np.ndarray, channels: int, size: tuple[int, int], fit: Fit) -> np.ndarray:
    """One decoded frame (h, w[, c]) to `channels` and (H, W): grayscale by ITU-R 601 luma,
    bilinear resize; `pad` keeps the aspect ratio and pads with zeros, `crop` keeps it and
    crops the centre, `stretch` ignores it."""
    image = Image.fromarray(frame if frame.ndim == 2 or frame.shape[-1] > 1 else frame[..., 0])
    image = image.convert("L" if channels == 1 else "RGB")
    height, width = size
    if fit == "stretch":
        return np.asarray(image.resize((width, height), Image.BILINEAR))
    scale = (max if fit == "crop" else min)(width / image.width, height / image.height)
    scaled = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(scaled, Image.BILINEAR)
    canvas = Image.new(image.mode, (width, height))
    canvas.paste(image, ((width - scaled[0]) // 2, (height - scaled[1]) // 2))
    return np.asarray(canvas)


def _decode_video(path: Path) -> tuple[list[np.ndarray], float | None, list[float]]:
    import av

    frames, timestamps = [], []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("the file holds no video stream")
            stream = container.streams.video[0]
            expected = stream.frames
            rate = float(stream.average_rate) if stream.average_rate else None
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                seconds = frame.time if frame.time is not None else len(timestamps) / (rate or 1)
                timestamps.append(float(seconds))
    except av.error.EOFError:
        pass  # a container with a video stream but no packets: "no frames" below
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot decode the video, it is truncated or corrupt ({exc})") from exc
    if not frames:
        raise ValueError("the video has no frames")
    if expected and len(frames) < expected:
        raise ValueError(f"the video is truncated: {len(frames)} of its {expected} frames decode")
    return frames, rate, timestamps


def _read_frame_folder(folder: Path) -> list[np.ndarray]:
    from natsort import natsorted

    files = natsorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=str
    )
    if not files:
        raise ValueError("the frame folder holds no PNG, JPEG or TIFF frames")
    frames = []
    for path in files:
        data, ext = path.read_bytes(), IMAGE_EXTENSIONS[path.suffix.lower()]
        try:
            pixels = math.prod(declared_shape(data, ext))
            frame = None if pixels > MAX_PIXELS else decode_image(data, ext)
        except Exception as exc:  # each codec raises its own error for a corrupt frame
            raise ValueError(
                f"cannot decode frame {path.name}, it is truncated or corrupt ({exc})"
            ) from exc
        if frame is None:
            raise ValueError(
                f"frame {path.name} declares {pixels:,} pixels, more than the limit of "
                f"{MAX_PIXELS:,} against decompression bombs"
            )
        frames.append(frame)
        if frames[-1].shape[:2] != frames[0].shape[:2]:
            raise ValueError(
                f"frames differ in size: {files[0].name} is {frames[0].shape[:2]}, "
                f"{path.name} is {frames[-1].shape[:2]}"
            )
    return frames


def load_video(
    source: str, channels: int, size: tuple[int, int], fit: Fit, clip_len: int | None
) -> LoadedVolume:
    """Decode a video file or frame folder to (t, y, x[, c]) at the ingest size."""
    path = Path(source)
    try:
        if path.is_dir():
            raw, fps = _read_frame_folder(path), None
            timestamps = [float(i) for i in range(len(raw))]
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            raw, fps, timestamps = _decode_video(path)
            files = [path]
    except ValueError as exc:
        raise BadInputError(source, str(exc)) from exc
    if clip_len and len(raw) < clip_len:
        raise BadInputError(source, f"has {len(raw)} frames, fewer than the clip length {clip_len}")
    frames = np.stack([fit_frame(f, channels, size, fit) for f in raw])
    axes = "tyx" if channels == 1 else "tyxc"
    # a chunk holds a clip's length of whole frames: a clip at any start touches two
    time_chunk = min(len(frames), clip_len or 8)
    return LoadedVolume(
        image=frames,
        mask=None,
        spacing=(1.0 / fps if fps else 1.0, 1.0, 1.0),
        unit=None,
        sources=[(source, files)],
        axes=axes,
        chunks=(time_chunk, *frames.shape[1:3], *([channels] if channels == 3 else [])),
        attributes={
            "fps": fps,
            "timestamps": timestamps,
            "frames": len(frames),
            "original_size": list(raw[0].shape[:2]),
            "fit": fit,
        },
        manifest={"fps": fps, "timestamps": timestamps, "spacing": None},
    )


def _clips(o: VideoIngestOptions) -> WindowSpec | None:
    return WindowSpec("clip", (o.clip_len,), o.clip_stride or o.clip_len) if o.clip_len else None


def ingest_video(options: VideoIngestOptions, command: str = "") -> IngestResult:
    """Ingest an index of videos or frame folders into a video dataset at `options.out`."""
    o = options
    spec = LabelSpec(o.label_col, tuple(o.label_cols), o.target_col, tuple(o.classes))
    rows = read_table(o.table)
    optional = [c for c in (o.key_col, o.group_col, o.split_col) if c]
    require_columns(o.table, rows, [o.video_col, *spec.columns, *optional])
    spec = spec.with_classes_from(rows)
    root = o.data_root

    def check(i: int, row: dict, where: str) -> Job:
        path = row_file(root, row, o.video_col, where, o.allow_outside_root)
        if path.is_file() and path.suffix.lower() not in VIDEO_SUFFIXES:
            raise BadInputError(
                str(path), f"not a video file ({', '.join(VIDEO_SUFFIXES)}) or frame folder"
            )
        key = row_key(row, o.key_col, row[o.video_col])
        parsed = spec.parse(row)
        return Job(
            row=i,
            key=key,
            source=str(path),
            group=o.group_of(row, key),
            split=o.split_of(row),
            parsed=parsed,
            files=(str(path),),
            read=load_video,
            args=(str(path), o.channels, tuple(o.size), o.fit, o.clip_len),
        )

    jobs, rejected = check_rows(o.table, rows, check)

    recipe = Recipe(
        spec=spec,
        kind="video",
        identity=o.identity(),
        tables=(o.table,),
        sources=o.sources,
        command=command,
        channel_names=("gray",) if o.channels == 1 else ("red", "green", "blue"),
        window=_clips(o),
        layout=o.layout(),
        spacing=o.spacing,
    )
    return run_ingest(jobs, rejected, recipe, o)
