"""The `medshard` command line: ingest, inspect, verify, synth, train, predict, bench, demo."""

from __future__ import annotations

import typer

from medshard.commands.dataset import bench, inspect, verify
from medshard.commands.demo import demo
from medshard.commands.derive import derive
from medshard.commands.ingest import ingest_app
from medshard.commands.predict import predict
from medshard.commands.synth import synth_app
from medshard.commands.train import train

app = typer.Typer(
    help="Streaming shards and GPU loaders for biomedical imaging.", no_args_is_help=True
)
app.add_typer(ingest_app, name="ingest")
app.add_typer(synth_app, name="synth")
app.command()(inspect)
app.command()(verify)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(train)
app.command()(bench)
app.command()(predict)
app.command()(derive)
app.command()(demo)
