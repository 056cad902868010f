"""The torch backend's loader of 2D image shards, built the way FFCV loads: threads of the
training process each take a sample, read its bytes once (a pread; the checksum the
first time this loader reads it), take its pixels (a view of a raw training copy, else
decoded), make the chain's geometric steps on the stored integers (crop, flip, turn,
resize) and copy the result straight into its slot of a preallocated batch of the
stored type. The intensity steps of every sample (bit depth, colour to gray, contrast,
brightness, normalisation) are folded into one multiply-add per sample and channel,
made where the values first become floats: on a GPU once on the whole batch, on the
device, so that integers, not floats, cross to it; on a CPU in the sample's thread, which
copies it into the float batch and then applies the multiply-add to all of its job's
samples at once (`settle`). Batches never cross a process boundary
(loaders/slots.py), and the kernel reads ahead of the plan (loaders/readahead.py)."""

from __future__ import annotations

import numpy as np
import torch

from medshard.errors import DatasetError
from medshard.loaders.augment import Augment2D, geometry_2d, to_float_2d
from medshard.loaders.chain2d import (
    batch_intensity,
    chain_2d,
    chain_columns,
    chain_rows,
    draw_count,
)
from medshard.loaders.copies import PixelSource
from medshard.loaders.draws import sample_units
from medshard.loaders.frame_format import bit_depth_scale, stored_channels
from medshard.loaders.members import MemberRanges
from medshard.loaders.readahead import FetchAhead, ReadAhead
from medshard.loaders.slots import Filler, SlotLoader
from medshard.loaders.sources import ShardSamples, label_fields
from medshard.shards.random_access import member_spans

__all__ = ["ImageFiller", "ImageLoader", "output_size"]


def output_size(config: Augment2D, shapes) -> tuple[int, int]:
    """The (H, W) of every image of a batch: the augmentation's, else the images' own
    (one size: build_loader refuses sizes that differ)."""
    for size in (config.random_resized_crop, config.random_crop, config.resize):
        if size:
            return int(size[0]), int(size[1])
    first = next(iter(shapes))
    return int(first[1]), int(first[2])


def _colour(channels: int) -> int:
    return 1 if channels < 3 else 3


class ImageFiller(Filler):
    """Puts the 2D images of `source` into batch slots (a slots.Filler): pixels from
    `pixels`, augmented by `config` (drawn per sample when `training`), as `channels`
    channels normalised by `stats` (per channel, unit scale)."""

    def __init__(
        self,
        source: ShardSamples,
        pixels: PixelSource,
        config: Augment2D,
        *,
        seed: int,
        training: bool,
        stats: tuple[list[float], list[float]] | None,
        channels: int,
        on_device: bool = False,
    ):
        self.source, self.pixels, self.config = source, pixels, config
        self.on_device = on_device
        self.seed, self.training, self.channels, self.stats = seed, training, channels, stats
        shapes = [pixels.shapes[r["key"]] for r in source.rows]
        colours = {_colour(s[0]) for s in shapes}
        # a batch slot holds the stored channels, three where colour meets a gray output
        self.slot_channels = 3 if channels == 3 or 3 in colours else 1
        self.size = output_size(config, shapes)
        dtypes = {np.dtype(r["dtype"]) for r in source.rows}
        wide = np.result_type(*dtypes)
        self.dtype = np.dtype(np.float32) if wide.kind == "f" else wide
        sizes = {tuple(s[1:]) for s in shapes}
        entering = sizes.pop() if len(sizes) == 1 else None
        self.chain = chain_2d(config, entering, channels, stats)
        self.draw_count = draw_count(self.chain)
        first = source.rows[0]
        self.labels = {name: np.asarray(value).dtype for name, value in label_fields(first).items()}
        self.label_shapes = {name: np.shape(value) for name, value in label_fields(first).items()}
        self.members = MemberRanges(source.files, source.rows)  # learnt from checked reads

    def layout(self, size: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        if self.on_device:
            # stored values, and per sample a gain per channel (or where colour meets gray
            # a (channels, stored channels) matrix of weights) and an offset per channel
            mixing = self.slot_channels != self.channels
            weights = (self.channels, self.slot_channels) if mixing else (self.channels,)
            layout = {
                "image": ((size, self.slot_channels, *self.size), self.dtype),
                "weights": ((size, *weights), np.dtype(np.float32)),
                "offset": ((size, self.channels), np.dtype(np.float32)),
            }
        else:  # floats, and each sample's gain and offset until its job settles them
            affine = ((size, self.channels, 1, 1), np.dtype(np.float32))
            layout = {
                "image": ((size, self.channels, *self.size), np.dtype(np.float32)),
                "gain": affine,
                "offset": affine,
            }
        for name, dtype in self.labels.items():
            kind = np.dtype(np.int64) if dtype.kind in "iu" else np.dtype(np.float32)
            layout[name] = ((size, *self.label_shapes[name]), kind)
        return layout

    def begin_pass(self) -> None:
        """A shard changed on disk since its samples were first read: read them whole and
        check them again."""
        self.members.forget_changed()

    def _pixels(self, index: int) -> np.ndarray:
        """Sample `index`'s pixels (C, H, W): the first time, from the whole sample,
        checked; then from its pixel member alone where it is read from a file (a byte
        range from a store is the whole sample's, fetched ahead and checked each time)."""
        row, members = self.source.rows[index], self.members
        try:
            field = members.field(index)
            if field is not None and self.source.files.in_files(row["shard"]):
                data = members.read(index)
                return data if isinstance(data, np.ndarray) else self.pixels.decode(field, data)
            data = self.source.sample_bytes(index)
            spans = member_spans(data, row["shard"], row["key"])
            field = self.pixels.field(spans)
            start, size = spans[field]
            pixels = self.pixels.decode(field, data[start : start + size])
            members.learn(index, field, start, size, pixels if self.pixels.raw else None)
            return pixels
        except DatasetError:
            raise
        except Exception as exc:  # each codec raises its own error for corrupt bytes
            raise DatasetError(
                f"{row['shard']}: sample {row['key']!r}: its pixels do not decode ({exc})"
            ) from exc

    def draw(self, indices: np.ndarray, epoch: int) -> list[tuple]:
        """Each sample's parameters (per transform) and intensity map (gain and offset per
        channel, before its bit depth's scale), for a whole batch in one vectorised pass:
        drawn one sample at a time, they cost more than the sample's copy. A sample draws
        numbers that only (seed, epoch, index) give, whichever thread or batch reads it;
        evaluation draws nothing."""
        units = sample_units(self.seed, epoch, indices, self.draw_count) if self.training else None
        columns = chain_columns(self.chain, units)
        count = len(indices)
        gain, offset = batch_intensity(self.chain, columns, self.channels, count)
        return list(zip(chain_rows(columns, count), gain, offset))

    def fill(
        self, arrays: dict, slot: int, index: int, epoch: int, drawn: tuple | None = None
    ) -> None:
        row = self.source.rows[index]
        params, gain, offset = drawn or self.draw(np.array([index]), epoch)[0]
        pixels = self._pixels(index)
        x, mix = stored_channels(pixels, self.channels)  # numpy views until the copy
        x = geometry_2d(self.chain, params, x)
        if tuple(x.shape[-2:]) != self.size:
            raise DatasetError(
                f"{row['shard']}: sample {row['key']!r} is {x.shape[-2]}x{x.shape[-1]} after "
                f"the augmentation, the batch {self.size[0]}x{self.size[1]}"
            )
        gain = gain / bit_depth_scale(pixels.dtype)
        if self.on_device:
            self._stored(arrays, slot, x, mix, gain, offset)
        elif mix is None:  # the gain and offset with the job's other samples (`settle`)
            np.copyto(arrays["image"][slot], x, casting="unsafe")
            arrays["gain"][slot, :, 0, 0] = gain
            arrays["offset"][slot, :, 0, 0] = offset
        else:
            _to_float(arrays["image"][slot], x, mix, gain, offset)
            arrays["gain"][slot], arrays["offset"][slot] = 1, 0
        for name, value in label_fields(row).items():
            arrays[name][slot] = value

    def _stored(self, arrays: dict, slot: int, x, mix, gain, offset) -> None:
        """Slot `slot` as stored values, with the map to floats that `finish` makes."""
        count = x.shape[0]
        image = arrays["image"][slot]
        np.copyto(image[:count], x, casting="same_kind")
        if count < self.slot_channels:
            image[count:] = 0  # read with weight 0: never a NaN left by an earlier batch
        arrays["offset"][slot] = offset
        if arrays["weights"].ndim == 2:
            arrays["weights"][slot] = gain
        else:
            mix = np.eye(self.channels, count) if mix is None else mix
            arrays["weights"][slot] = 0
            arrays["weights"][slot, :, :count] = np.broadcast_to(gain, self.channels)[:, None] * mix

    def settle(self, arrays: dict, rows: slice, kept: list[bool]) -> None:
        """On a CPU, the gain and offset of one job's samples (`rows`; `kept`: those that
        loaded), in two passes over all of them: each numpy call hands the GIL to the
        other threads and takes it back, which per sample cost more than the arithmetic."""
        if self.on_device:
            return
        image, gain, offset = (arrays[n][rows] for n in ("image", "gain", "offset"))
        if all(kept):
            image *= gain
            image += offset
            return
        for row in np.flatnonzero(kept):
            image[row] *= gain[row]
            image[row] += offset[row]

    def finish(self, batch: dict, epoch: int) -> dict:
        """On the device, the batch's one pass to floats (after integers crossed to it);
        on a CPU the jobs' threads made them (`fill`, `settle`)."""
        if not self.on_device:
            del batch["gain"], batch["offset"]
            return batch
        image = batch.pop("image")
        if image.dtype == torch.uint16 and image.device.type != "cpu":
            image = image.view(torch.int16).to(torch.int32).bitwise_and_(0xFFFF)
        batch["image"] = to_float_2d(image, batch.pop("weights"), batch.pop("offset"))
        return batch


def _to_float(out: np.ndarray, x, mix: np.ndarray | None, gain, offset) -> None:
    """Stored values `x` (a view) into the float slot `out`: the copy and the cast in one
    pass, then the gain and offset in place; in numpy, whose loops use this thread
    alone (torch's OpenMP team would spin on cores the loader's other threads use)."""
    if mix is None:
        np.copyto(out, x, casting="unsafe")
        out *= np.reshape(gain, (-1, 1, 1)).astype(np.float32)
    else:  # colour to gray
        weights = (np.broadcast_to(gain, out.shape[0])[:, None] * mix).astype(np.float32)
        np.einsum("oc,chw->ohw", weights, np.asarray(x, np.float32), out=out)
    out += np.reshape(offset, (-1, 1, 1)).astype(np.float32)


class ImageLoader(SlotLoader):
    """A SlotLoader of 2D images that hints the kernel to read each pass's next batches
    (`window` beyond the batches in flight) before their threads ask for them."""

    def __init__(self, filler: ImageFiller, *, window: int = SlotLoader.window, **options):
        super().__init__(filler, **options)
        source = filler.source
        self._names = sorted({r["shard"] for r in source.rows})  # numbered as shards() are
        self._shards = source.shards()
        self._offsets = np.array([r["offset"] for r in source.rows], np.int64)
        self._sizes = np.array([r["bytes"] for r in source.rows], np.int64)
        self.window = window

    def _ahead(self):
        files = self.source.files
        window = self._ahead_window()
        if files.mirror is not None:  # a dataset at a URL: whole shards or byte ranges
            mirror, rows = files.mirror, self.source.rows  # the mirror the reads go through

            def fetch(indices: np.ndarray) -> None:
                mirror.prefetch([rows[int(i)] for i in indices], ahead=True)

            return FetchAhead(fetch, self.pass_batches(), window, mirror.url)
        return ReadAhead(
            files.dataset,
            self._names,
            self._shards,
            self._offsets,
            self._sizes,
            self.pass_batches(),
            window,
        )
