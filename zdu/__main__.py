"""``python3 -m zdu``: the same as the ``zdupgrade`` command."""
from .cli import entry_point

entry_point()
