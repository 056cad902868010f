"""Options every ingest shares: splits, shard limits, the error policy and where it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

__all__ = ["IngestOptions", "PositiveInt", "TableIngestOptions", "VolumeIngestOptions"]


PositiveInt = Annotated[int, Field(gt=0)]
Spacing = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def _bytes(value):
    """'256MB', '1GiB' (pydantic's ByteSize) or a number of bytes."""
    return int(TypeAdapter(ByteSize).validate_python(value)) if isinstance(value, str) else value


class IngestOptions(BaseModel):
    """The CLI flags map onto these fields; each source kind adds its own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    out: Path
    val_fraction: float = Field(0.2, ge=0, lt=1, allow_inf_nan=False)
    test_fraction: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False)
    folds: int = 0
    seed: int = Field(0, ge=0)
    shard_bytes: Annotated[int, BeforeValidator(_bytes)] = Field(256 * 2**20, gt=0)
    shard_samples: int = Field(10_000, gt=0)
    on_error: Literal["fail", "skip"] = "fail"
    workers: int | None = Field(None, ge=1)
    scheduler: str | None = None
    processes: bool = True
    overwrite: bool = False
    quiet: bool = False

    @field_validator("folds")
    @classmethod
    def _folds(cls, folds: int) -> int:
        if folds < 0 or folds == 1:
            raise PydanticCustomError(
                "folds",
                "give 0 (no cross-validation) or 2 or more folds, not {folds}",
                {"folds": folds},
            )
        return folds

    @field_validator("test_fraction")
    @classmethod
    def _fractions(cls, test: float, info: ValidationInfo) -> float:
        val = info.data.get("val_fraction")
        if val is not None and val + test >= 1:
            raise PydanticCustomError(
                "fractions",
                "validation {val} and test {test} leave no sample to train on; "
                "their sum must be below 1",
                {"val": val, "test": test},
            )
        return test

    def identity(self) -> dict:
        """The options that decide the dataset's content (not how or where it is built)."""
        runtime = {"out", "workers", "scheduler", "processes", "overwrite", "quiet"}
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in runtime}

    def inputs(self) -> list[Path]:
        """The folders and files this ingest reads; --out may not be, hold or lie in one."""
        return [value for name, value in self if isinstance(value, Path) and name != "out"]


class VolumeIngestOptions(IngestOptions):
    """What every volume and video ingest adds: how its arrays are laid out. `codec`:
    Zarr chunks uncompressed (fastest to read: patches are copied in place), in Blosc LZ4
    (smaller, decoded per chunk) or zstd (archives); `intensity`: floating-point images
    stored as they are, as float16, or as int16 with a per-channel scale and offset (both
    halve the bytes of float32)."""

    patch_size: tuple[PositiveInt, PositiveInt, PositiveInt] = (64, 64, 64)
    crops: tuple[PositiveInt, PositiveInt, PositiveInt] | None = None
    spacing: tuple[Spacing, Spacing, Spacing] | None = None
    codec: Literal["none", "lz4", "zstd"] = "none"
    intensity: Literal["source", "float16", "int16"] = "source"

    @field_validator("intensity")
    @classmethod
    def _scaled_crops(cls, intensity: str, info: ValidationInfo) -> str:
        if intensity == "int16" and info.data.get("crops"):
            raise PydanticCustomError(
                "intensity",
                "int16 intensities keep their scale beside the Zarr array, which crop "
                "shards would leave behind; store crops as float16 or source",
                {},
            )
        return intensity

    def layout(self):
        """The Zarr layout of this ingest's arrays (a shards.zarr_layout.ZarrLayout)."""
        from medshard.shards.zarr_layout import ZarrLayout

        return ZarrLayout(patch=self.patch_size, codec=self.codec, intensity=self.intensity)


class TableIngestOptions(IngestOptions):
    """What every ingest driven by a CSV table adds: where its paths lead, and the columns
    that give keys, groups and splits."""

    table: Path
    root: Path | None = None  # paths are relative to this; default: the table's folder
    allow_outside_root: bool = False
    key_col: str | None = None
    group_col: str | None = None
    split_col: str | None = None

    @property
    def data_root(self) -> Path:
        return self.root or self.table.parent

    @property
    def sources(self) -> dict:
        """Where the inputs are, as the card records it."""
        return {"table": str(self.table.resolve()), "root": str(self.data_root.resolve())}

    def group_of(self, row: dict[str, str], key: str) -> str:
        """A row's group (patient, embryo): the group column, else the sample itself."""
        return (row[self.group_col] if self.group_col else "") or key

    def split_of(self, row: dict[str, str]) -> str | None:
        """A row's own split, from the split column; ValueError when the cell is empty."""
        if not self.split_col:
            return None
        if not row[self.split_col]:
            raise ValueError(f"column {self.split_col!r} is empty")
        return row[self.split_col]

    def inputs(self) -> list[Path]:
        """The table's folder (where its paths lead by default) and every other input."""
        return [self.table.parent, *super().inputs()]
