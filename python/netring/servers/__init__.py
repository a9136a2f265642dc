"""The example servers ``python -m netring serve NAME`` knows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .echo import Echo

#: name -> protocol factory
SERVERS: dict[str, Callable[[], Any]] = {"echo": Echo}

__all__ = ["SERVERS"]
