"""The fleet lock's earlier import path: ``from zdu.lock import FleetLock`` keeps working for
scripts written against it (the lock now lives in :mod:`zdu.run.lock`)."""
from zdu.run.lock import FleetLock, LockOwner

__all__ = ["FleetLock", "LockOwner"]
