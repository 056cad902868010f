"""The DALI backend for 2D image shards: this rank's planned batches (the torch backend's
plan, loaders/dali_feed.py) fed to an external source; decoding on the GPU (`mixed`) when
CUDA is there, else a CPU-only pipeline (`device_id=None`); a dataset's training copies
unless `original` (loaders/dali_images.py: raw ones through `fn.decoders.numpy`); the 2D
chain of loaders/chain2d.py as DALI operators.

Every sample is decoded to the loader's channel count (gray repeated, alpha dropped) at
16 bits when any sample is 16-bit (8-bit values then scaled by 257), so that each sample
is scaled by its own bit depth.

Each pass builds its pipeline with a seed from (seed, epoch, rank, start position) and
checkpointing on. A loader state holds the global position, and this rank's DALI
checkpoint (its random operators' states): resumed on the same ranks with the same batch
size, the pipeline restarts from that checkpoint and draws what the interrupted one would
have drawn; on other ranks, the rest of the epoch is read from the global position with
fresh draws."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from medshard.loaders.augment import Augment2D, Augment3D, augment_2d, augment_3d, sample_generator
from medshard.loaders.chain2d import chain_2d
from medshard.loaders.copies import PixelSource
from medshard.loaders.dali_feed import PlanFeed
from medshard.loaders.dali_images import image_nodes
from medshard.loaders.frame_format import bit_depth_scale
from medshard.loaders.partition import Uneven
from medshard.loaders.seeds import derive_seed
from medshard.loaders.sources import Selection, ShardSamples
from medshard.loaders.torch_loader import LoaderIdentity, LoaderState, PlanSpec, Resumable
from medshard.shards.reader import Dataset

__all__ = ["DaliLoader"]


class DaliLoader(Resumable):
    """Same protocol as TorchLoader: len, set_epoch, state_dict, load_state_dict, iter."""

    def __init__(
        self,
        ds: Dataset,
        split: str,
        *,
        batch_size: int,
        augment: Augment2D | Augment3D,
        seed: int,
        training: bool,
        shuffle: bool,
        uneven: Uneven,
        drop_last: bool,
        rank: int,
        world_size: int,
        device: torch.device,
        identity: LoaderIdentity,
        channels: int,
        stats: tuple[list[float], list[float]] | None,
        threads: int = 2,
        pixels: PixelSource | None = None,
        shuffle_shards: int | None = None,
    ):
        """`channels` and `stats` (per channel, unit scale) of the batches of 2D images,
        read from `pixels` (a training copy, or the original)."""
        self.ds, self.split, self.augment, self.identity = ds, split, augment, identity
        self.channels, self.stats = channels, stats
        self.batch_size, self.seed, self.training, self.shuffle = (
            batch_size,
            seed,
            training,
            shuffle,
        )
        self.uneven, self.drop_last = uneven, drop_last
        self.rank, self.world_size, self.device, self.threads = rank, world_size, device, threads
        rows = [r for r in ds.manifest.to_pylist() if r["split"] == split and r["shard"]]
        self.num_samples = len(rows)
        self.sixteen_bit = any(r["dtype"] == "uint16" for r in rows)
        self.pixels = pixels
        shapes = pixels.shapes.values() if pixels else [r["shape"] for r in rows if r["shape"]]
        sizes = {tuple(s[1:3]) for s in shapes}
        self.size = sizes.pop() if len(sizes) == 1 else None  # (H, W) shared by every image
        self.image_exts = ";".join(f for f in ds.card.fields if f.startswith("image."))
        # Volume crops and video clips are stored as .npy: DALI reads and decodes them, and
        # the Augment3D / Augment2D chain runs in torch on the device afterwards.
        self.arrays = self.image_exts == "image.npy"
        self.masked = "mask.npy" in ds.card.fields
        self.samples = ShardSamples(ds, Selection(split, None))  # the torch backend's indices
        plan = PlanSpec(
            len(self.samples), batch_size, seed, shuffle, uneven, drop_last, rank, world_size
        )
        self.plan = plan.reading(self.samples, shuffle_shards)
        self.state = LoaderState()
        self._pass = _Pass()
        self._restore: dict | None = None  # this rank's saved state, for the next pass

    def _seed(self, epoch: int) -> int:
        return derive_seed(self.seed, epoch, self.rank, self._pass.start, bits=31)

    def _checkpointing(self) -> dict:
        """Pipeline options: checkpointing on, restored from the saved checkpoint."""
        return {"enable_checkpointing": True, "checkpoint": self._pass.checkpoint}

    def _reader(self, epoch: int, ext: list[str]):
        from nvidia.dali import fn, types

        run = self._pass
        run.feed = PlanFeed(
            self.samples, self.pass_batches(), ext, first=run.first, threads=self.threads
        )
        return fn.external_source(
            source=run.feed,
            num_outputs=len(ext),
            batch=True,
            batch_info=True,
            dtype=types.UINT8,
            ndim=1,
        )

    def _rank_state(self) -> dict | None:
        """Where this rank's pipeline stands: its DALI checkpoint, taken after the batches
        it has yielded, and the pass it belongs to."""
        run = self._pass
        if run.pipe is None:
            return None
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "epoch": self.state.epoch,
            "position": self.position,
            "pass_start": run.start,
            "iteration": run.first + self.state.yielded,
            "dali": base64.b64encode(run.pipe.checkpoint()).decode("ascii"),
        }

    def _resume_exactly(self, rank_state: dict | None) -> None:
        self._restore = rank_state

    def _begin_pass(self) -> None:
        """Restore this rank's DALI checkpoint when it was taken where this pass starts."""
        saved, state = self._restore, self.state
        self._restore = None
        if saved and (saved["epoch"], saved["position"]) == (state.epoch, state.start):
            self._pass = _Pass(
                start=saved["pass_start"],
                first=saved["iteration"],
                checkpoint=base64.b64decode(saved["dali"]),
            )
        else:
            self._pass = _Pass(start=state.start)

    def _array_pipeline(self, epoch: int):
        from nvidia.dali import fn, pipeline_def

        cuda = self.device.type == "cuda"

        @pipeline_def(
            batch_size=self.batch_size,
            num_threads=self.threads,
            device_id=self.device.index or 0 if cuda else None,
            seed=self._seed(epoch),
            prefetch_queue_depth=2,
        )
        def pipeline():
            ext = ["image.npy", *(["mask.npy"] if self.masked else []), "json"]
            *arrays, meta = self._reader(epoch, ext)
            decoded = [fn.decoders.numpy(a) for a in arrays]
            return (*[d.gpu() if cuda else d for d in decoded], meta)

        pipe = pipeline(**self._checkpointing())
        pipe.build()
        return pipe

    def _pipeline(self, epoch: int):
        from nvidia.dali import pipeline_def

        if self.arrays:
            return self._array_pipeline(epoch)

        cuda = self.device.type == "cuda"
        chain = chain_2d(self.augment, self.size, self.channels, self.stats)
        pixels = self.pixels

        @pipeline_def(
            batch_size=self.batch_size,
            num_threads=self.threads,
            device_id=self.device.index or 0 if cuda else None,
            seed=self._seed(epoch),
            prefetch_queue_depth=2,
        )
        def pipeline():
            stored, meta = self._reader(epoch, [";".join(pixels.fields), "json"])
            image = image_nodes(
                stored,
                pixels,
                chain,
                training=self.training,
                channels=self.channels,
                dtype="uint16" if self.sixteen_bit else "uint8",
                cuda=cuda,
            )
            return image, meta

        pipe = pipeline(**self._checkpointing())
        pipe.build()
        return pipe

    def _tensor(self, tensors, size: int) -> torch.Tensor:
        """The first `size` samples of a dense DALI batch as a torch tensor on the device."""
        if self.device.type == "cuda":
            from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

            dense = tensors.as_tensor()
            out = torch.empty(dense.shape(), dtype=to_torch_type[dense.dtype], device=self.device)
            feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(self.device))
            return out[:size]
        return torch.from_numpy(np.array(tensors.as_tensor())[:size])

    def _batch(self, outputs, epoch: int, size: int) -> dict:
        *arrays, metas = outputs
        about = [json.loads(bytes(np.array(metas[i]))) for i in range(size)]
        batch: dict = {"image": self._tensor(arrays[0], size), "key": [m["key"] for m in about]}
        if self.arrays and self.masked:
            batch["mask"] = self._tensor(arrays[1], size).long()
        for name, kind in (
            ("label", torch.long),
            ("labels", torch.float32),
            ("target", torch.float32),
        ):
            if name in about[0]:
                batch[name] = torch.tensor([m[name] for m in about], dtype=kind, device=self.device)
        if self.arrays:
            self._augment_arrays(batch, epoch)
        return batch

    def _augment_arrays(self, batch: dict, epoch: int) -> None:
        """The torch augmentations on the device, each sample with its own seeded draw."""
        images, masks = [], []
        stats = self.ds.card.stats
        for i, key in enumerate(batch["key"]):
            generator = (
                sample_generator(self.seed, epoch, zlib.crc32(key.encode()))
                if self.training
                else None
            )
            image = batch["image"][i]
            if isinstance(self.augment, Augment3D):
                mask = batch["mask"][i] if "mask" in batch else None
                image, mask = augment_3d(
                    image, mask, self.augment, generator, stats.model_dump() if stats else None
                )
                masks.append(mask)
            else:
                dtype = str(image.dtype).removeprefix("torch.")
                scale = bit_depth_scale(dtype)
                image = augment_2d(image, self.augment, generator, scale, self.stats, self.channels)
            images.append(image)
        batch["image"] = torch.stack(images)
        if masks and masks[0] is not None:
            batch["mask"] = torch.stack(masks)

    def __iter__(self) -> Iterator[dict]:
        state = self.state
        self._begin_pass()
        run = self._pass
        run.pipe = self._pipeline(state.epoch)
        state.yielded = 0
        try:
            for _ in range(len(self)):
                outputs = run.pipe.run()
                state.yielded += 1
                yield self._batch(outputs, state.epoch, len(outputs[-1]))
        finally:
            run.pipe = None
            if run.feed is not None:
                run.feed.close()
        self.state = LoaderState(epoch=state.epoch)


@dataclass
class _Pass:
    """One pass of the DALI loader: the global position its plan starts at, the first
    iteration number its pipeline gives (a restored checkpoint's), and the pipeline."""

    start: int = 0
    first: int = 0
    checkpoint: bytes | None = None
    feed: PlanFeed | None = None
    pipe: object = None
