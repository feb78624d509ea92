"""The CLI's consoles: tables stay readable when output goes to a file or a pipe."""

import sys

from rich.console import Console

# Off a terminal rich assumes 80 columns, which truncates the wider tables.
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True)
