"""The local test and demo fleet: real OpenSSH nodes in containers, behind a real HAProxy.

``from zdu.lab import Lab`` imports docker and testcontainers; ``zdu.lab.image`` does not.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Lab", "LabNode", "LabError", "FAULT_WORDS", "ensure_image"]


def __getattr__(name: str) -> Any:
    # lazy: the product imports nothing of the lab, and `python -m zdu.lab image` needs no testcontainers
    if name in ("Lab", "LabNode", "LabError", "FAULT_WORDS"):
        from zdu.lab import fleet
        return getattr(fleet, name)
    if name == "ensure_image":
        from zdu.lab.image import ensure_image
        return ensure_image
    raise AttributeError(name)
