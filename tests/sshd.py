"""The test sshd's earlier import path (``from tests.sshd import SshdServer``), kept for scripts
written against it; the helper lives in :mod:`tests.support.sshd`."""
from tests.support.sshd import SshdServer

__all__ = ["SshdServer"]
