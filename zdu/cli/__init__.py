"""The command line: ``main(argv, env) -> Status``; the only layer that touches argv, stdout and exit status."""
from .main import entry_point, main

__all__ = ["entry_point", "main"]
