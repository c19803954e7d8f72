"""In-process locks per key: one `asyncio.Lock` per name, kept only while someone holds or
waits for it (so the registry does not grow with every owner and collection ever seen).

One process's half of a lock; storage/locks.py adds the database's half (a Postgres
advisory lock) so replicas serialize too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def holders(self, key: str) -> int:
        """How many tasks hold or wait for `key` (0 when nobody does)."""
        return self._locks.get(key, (None, 0))[1]

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, holders = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, holders + 1)
        try:
            async with lock:
                yield
        finally:
            lock, holders = self._locks[key]
            if holders == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, holders - 1)
