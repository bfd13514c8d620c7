"""Small helpers shared by the command modules."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape


def print_error(console: Console, error: object, *, prefix: str = "[bold red]error:[/] ") -> None:
    """Print an error message verbatim: paths and labels in brackets must not be read as rich markup, and a
    long path is never broken over lines (the line is left to the terminal to wrap)."""
    console.print(prefix + escape(str(error)), highlight=False, soft_wrap=True)
