"""The training loop on Hugging Face Accelerate: the same code on one CPU, one GPU, many
GPUs and many nodes. Each rank reads its own part of every epoch through the medshard
loader; Accelerate wraps the model (DDP), mixed precision and gradient accumulation."""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import torch
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medshard.errors import MedshardError
from medshard.loaders import Augment2D, Augment3D, build_loader
from medshard.shards.reader import open_dataset
from medshard.trainers.checkpoint import (
    TrainingState,
    copy_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from medshard.trainers.config import ConfigError, TrainConfig
from medshard.trainers.finetune import load_weights, set_backbone_trainable, split_parameters
from medshard.trainers.models import build_model, head_prefixes
from medshard.trainers.tasks import Task, build_task

__all__ = ["NonFiniteLossError", "train", "run_dir"]


class NonFiniteLossError(MedshardError, ArithmeticError):
    """The training loss became NaN or infinite: the run has diverged."""


def run_dir(config: TrainConfig) -> Path:
    suffix = f"-fold{config.fold}" if config.fold is not None else ""
    return config.output_dir / f"{config.name}{suffix}"


def _plain(value):
    """Metric values as JSON: floats, or lists for per-class metrics."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value


def _loaders(config: TrainConfig, ds, task: Task, accelerator):
    kind = ds.card.kind
    try:
        augment = (Augment3D if kind == "volumes" else Augment2D)(**config.augment)
    except ValueError as exc:
        raise ConfigError(f"augment: {exc}") from exc
    lc = config.loader
    common = dict(
        batch_size=lc.batch_size,
        augment=augment,
        backend=lc.backend,
        seed=config.seed,
        num_workers=lc.num_workers,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        device=accelerator.device,
        fold=config.fold,
        patch_size=lc.patch_size,
        samples_per_volume=lc.samples_per_volume,
        foreground_prob=lc.foreground_prob,
        clip_len=lc.clip_len,
        clips_per_video=lc.clips_per_video,
    )
    train_split = lc.train_split if config.fold is None else "train"
    val_split = lc.val_split if config.fold is None else "val"
    return (
        build_loader(ds, train_split, training=True, **common),
        # every validation sample counts once: ranks read shares that differ by at most one
        build_loader(ds, val_split, training=False, uneven="uneven", **common),
    )


def _model(config: TrainConfig, ds, task: Task, log) -> tuple[torch.nn.Module, tuple[str, ...]]:
    rows = ds.manifest.to_pylist()
    shape = next(r["shape"] for r in rows if r["zarr_path"] or r["shard"])
    kind = ds.card.kind
    in_channels = config.augment.get("channels") or (
        shape[3] if kind == "video" and len(shape) == 4 else 1 if kind == "video" else shape[0]
    )
    spatial_dims = 3 if kind == "volumes" else 2
    model = build_model(config, spatial_dims, in_channels, task.out_channels)
    if config.finetune.checkpoint:
        report = load_weights(model, config.finetune.checkpoint)
        log(f"fine-tuning from {config.finetune.checkpoint}: {report.summary()}")
    return model, config.finetune.head or head_prefixes(model)


def _optimizer(config: TrainConfig, model, head):
    backbone, top = split_parameters(model, head)
    lr = config.optim.lr
    groups = [
        {"params": backbone, "lr": config.finetune.backbone_lr or lr},
        {"params": top, "lr": config.finetune.head_lr or lr},
    ]
    optimizer = torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=lr, weight_decay=config.optim.weight_decay
    )
    if config.optim.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(config.epochs, 1)
        )
    elif config.optim.schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=2)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return optimizer, scheduler


def _loss(task: Task, loss_fn, output, batch):
    target = task.target(batch)
    if task.name == "reconstruction":
        return loss_fn(output, target, batch.get("label"))
    return loss_fn(output, target)


def _check_finite(loss, accelerator, epoch: int, step: int, lr: float) -> None:
    """Stop on a NaN or infinite loss on any rank; every rank learns it at the same step,
    before the backward pass, so that none is left waiting in a collective."""
    losses = accelerator.gather(loss.detach().float().reshape(1))
    bad = [value for value in losses.tolist() if not math.isfinite(value)]
    if bad:
        raise NonFiniteLossError(
            f"epoch {epoch + 1}, step {step}: the training loss is {bad[0]}, so the run stops "
            f"here; check the inputs for NaN or infinite values, or lower the learning rate "
            f"(optim.lr={lr:g})"
        )


def _weights_sha256(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train(config: TrainConfig, *, resume: bool = False, quiet: bool = False) -> dict:
    """Train and validate; returns the best epoch's validation metrics."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    # a frozen backbone leaves parameters without gradients, which DDP must be told about
    ddp = DistributedDataParallelKwargs(
        find_unused_parameters=config.finetune.freeze_backbone_epochs > 0
    )
    accelerator = Accelerator(
        mixed_precision=config.optim.mixed_precision,
        gradient_accumulation_steps=config.optim.accumulate,
        kwargs_handlers=[ddp],
    )
    main = accelerator.is_main_process

    def log(message: str) -> None:
        if main and not quiet:
            accelerator.print(message)

    set_seed(config.seed)
    ds = open_dataset(config.dataset)
    task = build_task(config, ds)
    train_loader, val_loader = _loaders(config, ds, task, accelerator)
    model, head = _model(config, ds, task, log)
    optimizer, scheduler = _optimizer(config, model, head)
    model, optimizer = accelerator.prepare(model, optimizer)
    loss_fn = task.loss_fn(ds).to(accelerator.device)
    metrics = task.metrics().to(accelerator.device)

    out = run_dir(config)
    parts = dict(accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler)
    history: list[dict] = []
    if resume:
        history = load_checkpoint(out / "last", **parts).history
        log(f"resuming {out} after epoch {len(history)}")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(
            yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        )

    sign = 1 if task.mode == "max" else -1
    best = max((sign * h[task.monitor] for h in history if task.monitor in h), default=None)
    stale = 0
    for epoch in range(len(history), config.epochs):
        set_backbone_trainable(
            accelerator.unwrap_model(model),
            head,
            epoch,
            config.finetune.freeze_backbone_epochs,
            config.finetune.unfreeze,
        )
        train_loader.set_epoch(epoch)
        model.train()
        started = time.perf_counter()
        waited = losses = samples = 0.0
        seen: list[str] = []
        columns = (
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "loss {task.fields[loss]:.4f} | {task.fields[rate]:.0f} samples/s | "
                "data wait {task.fields[wait]:.0%}"
            ),
            TimeElapsedColumn(),
        )
        with Progress(*columns, disable=not main or quiet) as progress:
            bar = progress.add_task(
                "train", total=len(train_loader), epoch=epoch + 1, loss=0.0, rate=0.0, wait=0.0
            )
            ready = time.perf_counter()
            for step, batch in enumerate(train_loader, start=1):
                waited += time.perf_counter() - ready
                with accelerator.accumulate(model):
                    output = model(batch["image"])
                    loss = _loss(task, loss_fn, output, batch)
                    _check_finite(loss, accelerator, epoch, step, optimizer.param_groups[0]["lr"])
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.optim.grad_clip:
                        accelerator.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad()
                losses += loss.item() * len(batch["key"])
                samples += len(batch["key"])
                seen.extend(batch["key"])
                elapsed = time.perf_counter() - started
                progress.update(
                    bar,
                    advance=1,
                    loss=losses / samples,
                    rate=samples / elapsed,
                    wait=waited / elapsed,
                )
                ready = time.perf_counter()
        seconds = time.perf_counter() - started
        totals = accelerator.reduce(
            torch.tensor([losses, samples, waited, seconds], device=accelerator.device),
            reduction="sum",
        )
        record = {
            "epoch": epoch + 1,
            "train_loss": (totals[0] / totals[1]).item(),
            "samples_per_s": (totals[1] / (totals[3] / accelerator.num_processes)).item(),
            "data_wait_share": (totals[2] / totals[3]).item(),
            "lr": optimizer.param_groups[0]["lr"],
        }
        record |= _validate(model, val_loader, task, loss_fn, metrics, accelerator)
        if config.optim.schedule == "plateau":
            scheduler.step(record.get(task.monitor, record["val_loss"]))
        else:
            scheduler.step()
        history.append(record)
        log(
            f"epoch {epoch + 1}: train loss {record['train_loss']:.4f}, val loss "
            f"{record['val_loss']:.4f}, {task.monitor} {record.get(task.monitor, float('nan')):.4f}"
        )
        position = TrainingState(epoch=epoch + 1, loader=train_loader.state_dict(), history=history)
        save_checkpoint(out / "last", position, **parts)
        score = sign * record.get(task.monitor, -sign * record["val_loss"])
        improved = best is None or score > best + (
            config.early_stopping.min_delta if config.early_stopping else 0
        )
        if main:
            if improved:
                copy_checkpoint(out / "last", out / "best")
                (out / "metrics_val.json").write_text(json.dumps(record, indent=2) + "\n")
            (out / "history.json").write_text(json.dumps(history, indent=2) + "\n")
        best, stale = (score, 0) if improved else (best, stale + 1)
        _write_rank_audit(out, accelerator, seen, model)
        if config.early_stopping and stale >= config.early_stopping.patience:
            log(f"early stopping: {task.monitor} has not improved for {stale} epochs")
            break
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return json.loads((out / "metrics_val.json").read_text())


def _validate(model, loader, task: Task, loss_fn, metrics, accelerator) -> dict:
    model.eval()
    losses = torch.zeros(2, device=accelerator.device)
    with torch.no_grad():
        for batch in loader:
            output = model(batch["image"])
            losses += torch.tensor(
                [_loss(task, loss_fn, output, batch).item() * len(batch["key"]), len(batch["key"])],
                device=accelerator.device,
            )
            task.update(metrics, output, batch)
    total = accelerator.reduce(losses, reduction="sum")
    values = {f"val_{name}": _plain(v) for name, v in metrics.compute().items()}
    metrics.reset()
    return {"val_loss": (total[0] / total[1].clamp_min(1)).item(), **values}


def _write_rank_audit(out: Path, accelerator, seen: list[str], model) -> None:
    """Per rank: the samples it trained on in the last epoch and a checksum of its weights,
    so that disjoint reading and replicas in sync can be checked after a run."""
    out.mkdir(parents=True, exist_ok=True)
    audit = {
        "rank": accelerator.process_index,
        "samples": sorted(seen),
        "weights_sha256": _weights_sha256(accelerator.unwrap_model(model)),
    }
    (out / f"rank{accelerator.process_index}.json").write_text(json.dumps(audit) + "\n")
