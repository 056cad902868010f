"""The training configuration: one validated model loaded from YAML, with `key=value`
overrides; unknown keys and wrong types are refused before anything starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from medshard.errors import MedshardError
from medshard.loaders.spec import LoaderOptions
from medshard.loaders.views import ViewPipeline

__all__ = ["ConfigError", "TrainConfig", "load_config", "apply_overrides"]

Task = Literal[
    "classification", "multilabel", "segmentation", "regression", "reconstruction", "byol"
]


class ConfigError(MedshardError, ValueError):
    """A configuration that cannot be trained from."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LoaderConfig(LoaderOptions):
    """The `loader:` section: the loader options of medshard.loaders.spec (declared there
    once), and the splits that train and validate. The run gives each loader the rest:
    augmentation, seed, fold, rank and device."""

    train_split: str = "train"
    val_split: str = "val"


class ModelConfig(_Strict):
    # densenet121, resnet18, resnet34, efficientnet-b0, unet, vgg3d, convlstm_ae, or "pkg.mod:fn"
    name: str = "densenet121"
    out_channels: int | None = None  # default: from the dataset and task
    kwargs: dict[str, Any] = Field(default_factory=dict)


class FinetuneConfig(_Strict):
    checkpoint: Path | None = None  # weights loaded with strict=False
    head: tuple[str, ...] | None = None  # parameter name prefixes of the head (default: found)
    freeze_backbone_epochs: int = 0
    unfreeze: Literal["all", "progressive"] = "all"
    backbone_lr: float | None = None  # default: optim.lr
    head_lr: float | None = None


class OptimConfig(_Strict):
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "plateau", "none"] = "cosine"
    grad_clip: float | None = 1.0
    accumulate: int = 1
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"


class LossConfig(_Strict):
    label_smoothing: float = 0.0
    pos_weight: list[float] | Literal["auto"] | None = None  # multi-label BCE
    regression: Literal["mse", "l1"] = "mse"
    l1_weight: float = 1.0  # reconstruction: L1 + MS-SSIM + temporal smoothness (+ classifier)
    ssim_weight: float = 0.5
    smooth_weight: float = 0.1
    classifier_weight: float = 0.0


class CheckpointConfig(_Strict):
    """Mid-epoch checkpoints into `last/`, besides the one after every epoch: every N
    optimizer steps of an epoch and/or every M minutes; `validation` also runs the
    validation at each one. SIGTERM and SIGUSR1 always checkpoint before the run stops."""

    every_steps: int | None = Field(None, ge=1)
    every_minutes: float | None = Field(None, gt=0)
    validation: bool = False


class ByolConfig(_Strict):
    """`task: byol`: the projector and predictor MLPs, the target's momentum (rising from
    `momentum` to 1 on a cosine over the run's optimizer steps), the view pipeline's
    intensity steps (each view its own probabilities: the BYOL paper's asymmetric pair),
    and the k-NN probe on the validation split."""

    hidden_dim: int = Field(4096, ge=1)
    projection_dim: int = Field(256, ge=1)
    momentum: float = Field(0.996, ge=0.0, le=1.0)
    views: ViewPipeline = Field(default_factory=ViewPipeline)
    knn_k: int = Field(20, ge=1)
    knn_temperature: float = Field(0.1, gt=0)


class EarlyStopping(_Strict):
    patience: int = 5
    min_delta: float = 0.0


class TrainConfig(_Strict):
    name: str
    dataset: str  # a directory, or an s3:// URL (kept as written) read through a cache
    task: Task
    # a dataset at an s3:// URL: its cache folder (default $MEDSHARD_CACHE), the cache's
    # size limit ('50GB'; default $MEDSHARD_CACHE_LIMIT, else none) and an S3-compatible
    # store's endpoint (default $MEDSHARD_S3_ENDPOINT, else AWS's)
    cache_dir: Path | None = None
    cache_limit: StrictInt | str | None = None  # never `true` read as 1 byte
    endpoint_url: str | None = None
    loader: LoaderConfig = Field(default_factory=LoaderConfig)
    augment: dict[str, Any] = Field(default_factory=dict)  # Augment2D or Augment3D fields
    model: ModelConfig = Field(default_factory=ModelConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    byol: ByolConfig = Field(default_factory=ByolConfig)
    epochs: int = Field(10, ge=1)
    seed: int = 0
    monitor: str | None = None  # metric for the best checkpoint; default per task
    monitor_mode: Literal["max", "min"] | None = None
    early_stopping: EarlyStopping | None = None
    output_dir: Path = Path("outputs")
    fold: int | None = None  # cross-validation: validate on this fold, train on the others

    @field_validator("dataset", mode="before")
    @classmethod
    def _as_written(cls, value):
        return str(value) if isinstance(value, Path) else value  # Python callers pass paths

    @field_validator("cache_dir", "cache_limit", "endpoint_url")
    @classmethod
    def _remote_only(cls, value, info: ValidationInfo):
        from medshard.shards.mirror import parse_limit
        from medshard.shards.storage import is_url

        dataset = info.data.get("dataset")
        if value is not None and dataset is not None and not is_url(dataset):
            raise ValueError(f"applies to a dataset at an s3:// URL; {dataset} is a directory")
        if info.field_name == "cache_limit":
            try:
                parse_limit(value)
            except MedshardError as exc:
                raise ValueError(str(exc)) from None
        return value

    def storage(self) -> dict:
        """open_dataset's keywords for the dataset's cache and store."""
        return {
            "cache_dir": self.cache_dir,
            "cache_limit": self.cache_limit,
            "endpoint_url": self.endpoint_url,
        }


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`a.b=value` sets raw["a"]["b"]; the value is read as YAML (numbers, lists, null)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        dotted, text = item.split("=", 1)
        node = raw
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[last] = yaml.safe_load(text)
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read, override and validate a YAML config; relative dataset paths stay relative to
    the working directory, as on the command line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: the config file does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    raw = apply_overrides(raw, overrides or [])
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"{path}: {where}: {message}") from None
