"""The subcommands of `medshard`, one module per group."""
