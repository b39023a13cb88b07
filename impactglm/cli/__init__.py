"""The ``impactglm`` command line (:mod:`impactglm.cli.commands`).

``impactglm.cli:main`` stays the console-script entry point."""
from .commands import main

__all__ = ["main"]
