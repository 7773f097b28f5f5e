"""The `accord` command: one module per command group, assembled in `commands`."""

from broker.cli.commands import app, main

__all__ = ["app", "main"]
