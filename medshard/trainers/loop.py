"""The training loop on Hugging Face Accelerate: the same code on one CPU, one GPU, many
GPUs and many nodes. Each rank reads its own part of every epoch through the medshard
loader; Accelerate wraps the model (DDP), mixed precision and gradient accumulation.
The parts are built in setup.py, stepped in steps.py and recorded in records.py; the
mid-epoch checkpoints and the stop on a preemption signal are in midepoch.py."""

from __future__ import annotations

from medshard.shards.reader import open_dataset
from medshard.trainers.checkpoint import TrainingState
from medshard.trainers.config import TrainConfig
from medshard.trainers.finetune import set_backbone_trainable
from medshard.trainers.geometry import BatchGeometry, refuse_another_global_batch
from medshard.trainers.midepoch import MidEpoch
from medshard.trainers.preemption import StopRequests
from medshard.trainers.records import Monitor, RunFolder, epoch_line, run_dir
from medshard.trainers.setup import build_loaders, build_network, build_optimizer, step_scheduler
from medshard.trainers.steps import EpochTally, NonFiniteLossError, train_epoch, validate
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
    """Train and validate; returns the best epoch's validation metrics. A SIGTERM or
    SIGUSR1 checkpoints the run and raises `Preempted`."""
    from accelerate.utils import set_seed

    accelerator = _accelerator(config)
    show = accelerator.is_main_process and not quiet

    def log(message: str) -> None:
        if show:
            accelerator.print(message)

    set_seed(config.seed)
    ds = open_dataset(config.dataset, **config.storage())
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
    geometry = BatchGeometry(
        config.loader.batch_size, accelerator.num_processes, config.optim.accumulate
    )
    if not resume:
        run.refuse_a_started_run()
    state = run.resume(config) if resume else TrainingState(epoch=0)
    if state.step:
        refuse_another_global_batch(run.path / "last", state.batch, geometry)
        train_loader.load_state_dict(state.loader)
        log(f"resuming {run.path} in epoch {state.epoch + 1} at sample {train_loader.position}")
    elif resume:
        log(f"resuming {run.path} after epoch {state.epoch}")
    run.write_config(config)
    history = list(state.history)
    monitor = Monitor(task, config.early_stopping, history)
    finetune = config.finetune

    def validate_now() -> tuple[dict, list[str]]:
        scores = validate(model, val_loader, task, loss_fn, metrics, accelerator)
        model.train()
        return scores

    main = accelerator.is_main_process
    with StopRequests() as stops:
        mid = MidEpoch(config.checkpoint, stops, run, accelerator, geometry, state.validations, log)
        for epoch in range(state.epoch, config.epochs):
            network = accelerator.unwrap_model(model)
            set_backbone_trainable(
                network, head, epoch, finetune.freeze_backbone_epochs, finetune.unfreeze
            )
            train_loader.set_epoch(epoch)
            mid.begin(epoch, train_loader, history, validate_now)
            resumed = epoch == state.epoch and state.step > 0
            tally = train_epoch(
                model,
                train_loader,
                task,
                loss_fn,
                optimizer,
                accelerator,
                epoch,
                config.optim,
                show,
                done=mid.start // (geometry.per_rank * geometry.ranks),
                tally=EpochTally.carried(state.tally if resumed else None, main),
                asks=mid.asks,
                boundary=mid.boundary,
            )
            lr = optimizer.param_groups[0]["lr"]
            scores, validated = validate(model, val_loader, task, loss_fn, metrics, accelerator)
            record = {"epoch": epoch + 1, **tally.reduce(accelerator), "lr": lr, **scores}
            step_scheduler(scheduler, config, record, task)
            history.append(record)
            log(epoch_line(record, task.monitor))
            improved = monitor.update(record)
            saved = TrainingState(epoch=epoch + 1, history=history, validations=mid.validations)
            audit = run.audit(epoch, mid.start, tally.keys, validated)
            run.save_epoch(saved, improved, audit)
            mid.after_epoch(len(train_loader))
            if monitor.stop:
                log(f"early stopping: {task.monitor} has not improved for {monitor.stale} epochs")
                break
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return run.best_metrics()
