"""Connections per client address, for the servers whose library has no such cap (SMTP, HTTP)."""

from __future__ import annotations


class PerAddressCap:
    """Counts open connections per address and says when one more would pass the cap.

    Not thread-safe by design: each server touches its counter only on its own event loop.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        """Count a new connection from `address`; False (nothing counted) when at the cap."""
        count = self._open.get(address, 0)
        if count >= self.limit:
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        """Forget one connection of `address`."""
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)
