"""One loader spec: every choice `build_loader` takes, validated once. `LoaderOptions` are
what a training config's `loader:` section chooses (it is that section, plus the split
names); `LoaderSpec` adds what each loader of a run is given: its augmentation, seed,
role (training or evaluation) and place among the ranks."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from medshard.errors import MedshardError
from medshard.loaders.augment import Augment2D, Augment3D
from medshard.loaders.partition import Uneven
from medshard.loaders.sources import PadMode

__all__ = ["Backend", "LoaderOptions", "LoaderSpec", "LoaderSpecError"]

Backend = Literal["auto", "dali", "torch"]


class LoaderSpecError(MedshardError, ValueError):
    """Loader options that cannot make a loader."""


class LoaderOptions(BaseModel):
    """How batches are cut, sampled and read: the choices a config file makes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_size: int = 16
    backend: Backend = "auto"  # auto: DALI for 2D image shards on a GPU where it is installed
    num_workers: int = Field(2, ge=0)  # torch DataLoader workers; DALI threads
    patch_size: tuple[int, int, int] | None = None  # volumes: random patches from Zarr
    samples_per_volume: int = Field(4, ge=1)
    foreground_prob: float = Field(0.33, ge=0.0, le=1.0)
    pad_mode: PadMode = "minimum"  # volumes smaller than a patch (see sources.PadMode)
    clip_len: int | None = Field(None, ge=1)  # video: clips from Zarr
    clips_per_video: int = Field(1, ge=1)
    sequential_clips: bool | None = None  # default: sequential when not training
    drop_last: bool = False
    on_error: Literal["fail", "skip"] = "fail"
    original: bool = False  # 2D images: the original bytes, not the dataset's training copies
    # shuffle by runs of this many shards (a volume or video counts as one), not every
    # sample at once: an epoch from a URL then fetches a few shards at a time (partition.py)
    shuffle_shards: StrictInt | None = Field(None, ge=1)  # a number: True is not 1

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, value: int) -> int:
        if value <= 0:
            raise PydanticCustomError(
                "batch_size",
                "batch_size must be a positive number of samples, not {value}",
                {"value": value},
            )
        return value

    @field_validator("patch_size")
    @classmethod
    def _positive_patch(cls, value):
        if value is not None and min(value) < 1:
            raise PydanticCustomError(
                "patch_size",
                "a patch needs at least one voxel along each axis, not {value}",
                {"value": value},
            )
        return value


class LoaderSpec(LoaderOptions):
    """Everything `build_loader` takes besides the dataset and split."""

    augment: Augment2D | Augment3D | None = None  # default: normalisation only
    seed: int = 0
    training: bool = True  # random augmentation and shuffling
    shuffle: bool | None = None  # default: when training
    uneven: Uneven = "pad"  # samples that do not divide among ranks (partition.py)
    rank: int | None = Field(None, ge=0)  # default: the launcher's
    world_size: int | None = Field(None, ge=1)
    device: str | None = None  # default: cuda where there is one
    fields: tuple[str, ...] | None = None  # outputs that must be there
    fold: int | None = Field(None, ge=0)  # 'val' is fold k, 'train' the other folds

    @field_validator("device", mode="before")
    @classmethod
    def _device_name(cls, value):
        return None if value is None else str(value)  # a torch.device, or its name

    @classmethod
    def of(cls, spec: LoaderOptions | None = None, **fields: Any) -> LoaderSpec:
        """The options of `spec` (a LoaderSpec, or a config's LoaderOptions), with
        `fields` overriding them; an invalid value raises LoaderSpecError."""
        base = {name: getattr(spec, name) for name in type(spec).model_fields} if spec else {}
        base = {name: value for name, value in base.items() if name in cls.model_fields}
        try:
            return cls.model_validate(base | fields)
        except ValidationError as exc:
            raise LoaderSpecError(_sentence(exc)) from None


def _sentence(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"build_loader takes no option {where!r}"
    if first["type"] in ("batch_size", "patch_size"):
        return first["msg"]
    return f"{where}: {first['msg']}"
