"""What every command shares: the consoles, the one-sentence failure, and flag parsing."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = [
    "CacheDir",
    "CacheLimit",
    "Classes",
    "Crops",
    "EndpointUrl",
    "Folds",
    "GroupCol",
    "OnError",
    "Out",
    "Overwrite",
    "PatchSize",
    "Root",
    "Scheduler",
    "ShardSize",
    "Spacing",
    "SplitCol",
    "Workers",
    "command_line",
    "console",
    "errors",
    "fail",
    "own_message",
    "ingest_options",
    "parse_columns",
    "parse_pair",
    "parse_triple",
    "report_ingest",
    "run_ingest",
]

console = Console()
errors = Console(stderr=True)


def fail(exc: Exception) -> None:
    errors.print(f"[bold red]error:[/] {own_message(exc)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


def own_message(exc: Exception) -> str:
    """The exception's message; for one that torch re-raised from a DataLoader worker
    (its message is then "Caught ... Original Traceback ..."), the first line of the
    original exception's own message, which closes that traceback."""
    text = str(exc)
    if not text.startswith(f"Caught {type(exc).__name__} ") or "Original Traceback" not in text:
        return text
    module, name = type(exc).__module__, type(exc).__qualname__
    if module not in ("builtins", "__main__"):  # a traceback names built-in ones bare
        name = f"{module}.{name}"
    raised = f"\n{name}: "
    at = text.rfind(raised)
    if at < 0:
        return text.splitlines()[0]
    return text[at + len(raised) :].splitlines()[0]


def parse_columns(text: str | None) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip()) if text else ()


def command_line() -> str:
    return shlex.join(["medshard", *sys.argv[1:]])


def parse_pair(text: str) -> tuple[int, int]:
    """'128,128' -> (128, 128)."""
    values = text.split(",")
    if len(values) != 2 or not all(v.strip().isdigit() for v in values):
        raise typer.BadParameter(f"{text!r}: give the size as H,W, e.g. 128,128")
    return int(values[0]), int(values[1])


def parse_triple(text: str | None, kind=int, flag: str = "") -> tuple | None:
    """'64,64,64' -> (64, 64, 64), each value of `kind`; None for no text."""
    if not text:
        return None
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        named = f"{flag} " if flag else ""
        raise typer.BadParameter(
            f"{named}{text!r}: give three comma-separated numbers z,y,x, e.g. 64,64,64"
        )
    return values


_COLUMN_LISTS = {"label_cols", "classes", "modalities"}
_TRIPLES = {"patch_size": int, "crops": int, "spacing": float}
_RENAMED = {"samples_per_shard": "shard_samples", "shard_size": "shard_bytes"}


def ingest_options(flags: dict) -> dict:
    """An ingest command's flags as option fields: every flag is the field of the same
    name, with sizes, comma-separated lists and z,y,x triples parsed."""
    if flags["on_error"] not in ("fail", "skip"):
        raise typer.BadParameter("--on-error takes fail or skip")
    fields = {}
    for name, value in flags.items():
        if name in _COLUMN_LISTS:
            fields[name] = parse_columns(value)
        elif name in _TRIPLES:
            fields[name] = parse_triple(value, _TRIPLES[name], f"--{name.replace('_', '-')}")
        elif name == "size":
            fields[name] = parse_pair(value)
        else:
            fields[_RENAMED.get(name, name)] = value
    return fields


def run_ingest(options_class, ingest, flags: dict, done: str = "ingested") -> None:
    """Build the options from the flags, hold --out, ingest, and report what was `done`
    (or fail in one sentence; Ctrl-C or SIGTERM: one line, the staging removed, a
    non-zero exit)."""
    from pydantic import ValidationError

    from medshard.errors import MedshardError
    from medshard.ingest.output import card_state

    before = card_state(Path(flags["out"]))
    flags = dict(flags)
    endpoint = flags.pop("endpoint_url", None)  # an ingest command's --endpoint-url
    if endpoint:
        from medshard.shards.storage import ENDPOINT_VARIABLE

        os.environ[ENDPOINT_VARIABLE] = endpoint  # this process's uploads
    try:
        options = options_class(**ingest_options(flags))
        with _signals_interrupt():  # the ingest holds --out and recovers it on the way out
            result = ingest(options, command=command_line())
    except ValidationError as exc:  # a flag value the options refuse: name the flag
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "options"
        fail(f"--{_FLAGS.get(name, name).replace('_', '-')}: {first['msg']}")
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        what = "terminated" if signum == signal.SIGTERM else "interrupted"
        state = (
            "the new dataset was already in place"
            if card_state(Path(flags["out"])) != before
            else "nothing was changed"
        )
        errors.print(f"{what}; {state} at {_where(flags['out'])}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=128 + signum) from None
    except (MedshardError, ValueError) as exc:
        fail(exc)
    report_ingest(result, _where(flags["out"]), done)


def _where(out) -> str:
    """--out as the user wrote it (a Path folds the two slashes of an s3:// URL)."""
    from medshard.shards.storage import is_url, normal_url

    return normal_url(out) if is_url(out) else str(out)


_FLAGS = {field: flag for flag, field in _RENAMED.items()}


class Interrupted(KeyboardInterrupt):
    """A signal that stops an ingest the way Ctrl-C does, so that every `with` cleans up."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted in the main thread; a second one while cleaning
    up stops at once (the next ingest into the same --out recovers what is left)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kinds = (signal.SIGINT, signal.SIGTERM)
    previous = {kind: signal.getsignal(kind) for kind in kinds}

    def again(signum, frame):
        errors.print("stopped without cleaning up; the next ingest into --out recovers")
        os._exit(128 + signum)

    def first(signum, frame):
        for kind in kinds:
            signal.signal(kind, again)
        raise Interrupted(signum)

    for kind in kinds:
        signal.signal(kind, first)
    try:
        yield
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, handler)


def report_ingest(result, out: Path, done: str = "ingested") -> None:
    from medshard.commands.report import ingest_table

    if result.up_to_date:
        rebuild = " (--overwrite rebuilds it)" if done == "ingested" else ""  # derive has none
        console.print(
            f"{out}: already {done} with these inputs and options; nothing to do{rebuild}"
        )
    else:
        console.print(ingest_table(result, done))


PatchSize = Annotated[str, typer.Option(help="Training patch z,y,x: sets the Zarr chunks.")]
Crops = Annotated[
    str | None, typer.Option(help="Also write non-overlapping crops z,y,x to shards.")
]
Spacing = Annotated[str | None, typer.Option(help="Voxel spacing z,y,x (overrides metadata).")]
Out = Annotated[Path, typer.Option(help="Dataset directory to create, or an s3:// URL.")]
EndpointUrl = Annotated[
    str | None,
    typer.Option(
        help="S3-compatible endpoint of s3:// URLs (default: $MEDSHARD_S3_ENDPOINT, else AWS's)."
    ),
]
CacheDir = Annotated[
    Path | None,
    typer.Option(
        help="Cache folder of s3:// URLs (default: $MEDSHARD_CACHE, else ~/.cache/medshard)."
    ),
]
CacheLimit = Annotated[
    str | None,
    typer.Option(
        help="Most bytes cached of an s3:// URL, e.g. 20GB (default: $MEDSHARD_CACHE_LIMIT, "
        "else none)."
    ),
]
Root = Annotated[
    Path | None, typer.Option(help="Paths are relative to this (default: the table's folder).")
]
Classes = Annotated[str | None, typer.Option(help="Comma-separated known classes, in index order.")]
GroupCol = Annotated[str | None, typer.Option(help="Patient/embryo id: a group is never split.")]
SplitCol = Annotated[str | None, typer.Option(help="Keep this existing split column.")]
Folds = Annotated[int, typer.Option(help="Cross-validation folds over the non-test samples.")]
ShardSize = Annotated[str, typer.Option(help="Largest shard, e.g. 256MB.")]
OnError = Annotated[
    str, typer.Option(help="fail: stop at the first bad input; skip: record it and go on.")
]
Workers = Annotated[
    int | None, typer.Option(help="Local Dask worker processes (default: all cores).")
]
Scheduler = Annotated[
    str | None, typer.Option(help="Address of an existing dask.distributed scheduler.")
]
Overwrite = Annotated[
    bool, typer.Option(help="Replace the medshard dataset at --out (never another folder).")
]
