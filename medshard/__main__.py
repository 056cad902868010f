from medshard.cli import app

app()
