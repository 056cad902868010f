"""The training loop on Hugging Face Accelerate: the same code on one CPU, one GPU, many
GPUs and many nodes. Each rank reads its own part of every epoch through the medshard
loader; Accelerate wraps the model (DDP), mixed precision and gradient accumulation.
The parts are built in setup.py, stepped in steps.py and recorded in records.py."""

from __future__ import annotations

from medshard.shards.reader import open_dataset
from medshard.trainers.config import TrainConfig
from medshard.trainers.finetune import set_backbone_trainable
from medshard.trainers.records import Monitor, RunFolder, epoch_line, run_dir
from medshard.trainers.setup import build_loaders, build_network, build_optimizer, step_scheduler
from medshard.trainers.steps import NonFiniteLossError, train_epoch, validate
from medshard.trainers.tasks import build_task

__all__ = ["NonFiniteLossError", "train", "run_dir"]


def _accelerator(config: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    # a frozen backbone leaves parameters without gradients, which DDP must be told about
    frozen = config.finetune.freeze_backbone_epochs > 0
    return Accelerator(
        mixed_precision=config.optim.mixed_precision,
        gradient_accumulation_steps=config.optim.accumulate,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=frozen)],
    )


def train(config: TrainConfig, *, resume: bool = False, quiet: bool = False) -> dict:
    """Train and validate; returns the best epoch's validation metrics."""
    from accelerate.utils import set_seed

    accelerator = _accelerator(config)
    show = accelerator.is_main_process and not quiet

    def log(message: str) -> None:
        if show:
            accelerator.print(message)

    set_seed(config.seed)
    ds = open_dataset(config.dataset)
    task = build_task(config, ds)
    train_loader, val_loader = build_loaders(config, ds, accelerator)
    model, head = build_network(config, ds, task, log)
    optimizer, scheduler = build_optimizer(config, model, head, task)
    model, optimizer = accelerator.prepare(model, optimizer)
    loss_fn = task.loss_fn(ds).to(accelerator.device)
    metrics = task.metrics().to(accelerator.device)

    run = RunFolder(
        run_dir(config), accelerator, model=model, optimizer=optimizer, scheduler=scheduler
    )
    history = run.resume() if resume else []
    if resume:
        log(f"resuming {run.path} after epoch {len(history)}")
    run.write_config(config)
    monitor = Monitor(task, config.early_stopping, history)
    finetune = config.finetune
    for epoch in range(len(history), config.epochs):
        network = accelerator.unwrap_model(model)
        set_backbone_trainable(
            network, head, epoch, finetune.freeze_backbone_epochs, finetune.unfreeze
        )
        train_loader.set_epoch(epoch)
        tally = train_epoch(
            model, train_loader, task, loss_fn, optimizer, accelerator, epoch, config.optim, show
        )
        lr = optimizer.param_groups[0]["lr"]
        scores, validated = validate(model, val_loader, task, loss_fn, metrics, accelerator)
        record = {"epoch": epoch + 1, **tally.reduce(accelerator), "lr": lr, **scores}
        step_scheduler(scheduler, config, record, task)
        history.append(record)
        log(epoch_line(record, task.monitor))
        improved = monitor.update(record)
        run.save_epoch(history, train_loader.state_dict(), improved, (tally.keys, validated))
        if monitor.stop:
            log(f"early stopping: {task.monitor} has not improved for {monitor.stale} epochs")
            break
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return run.best_metrics()
