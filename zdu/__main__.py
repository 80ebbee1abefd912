"""``python3 -m zdu``, the ``zdupgrade`` console script and the checkout's ``./zdupgrade``.

:func:`launch` loads the program and runs it.  A Ctrl-C that comes where no run's own signal
handling is in place -- while the program loads (the libraries' imports take a fifth of a second),
while the command line is read, in a review or ``lock status`` command, in a dry run before its
plan is printed, the moment after a run recorded how it ended -- is one line and 130 instead of a
traceback: none of them changes a node.  During a run the run's handlers take Ctrl-C, SIGTERM
and SIGHUP (``zdu.cli.signals``).  This module imports nothing else until it is inside the guard.
"""
import sys


def launch() -> None:
    """Run zdupgrade with ``sys.argv``; exit with its status."""
    try:
        from .cli.main import entry_point
        entry_point()
    except KeyboardInterrupt:
        sys.stderr.write("zdupgrade: interrupted\n")
        sys.exit(130)                     # zdu.status.Status.INTERRUPTED


if __name__ == "__main__":
    launch()
