"""The `cmp-pipelines` command."""

from cmp_pipelines.cli.main import main

__all__ = ["main"]
