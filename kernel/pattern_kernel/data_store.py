"""The raw-data store behind the data cache pattern: records (images, texts) by id.

`DataStore` is the interface a backend reads through; `SQLiteStore` is the default
implementation (any store with `get`/`put` can be plugged in). Seeding it is the runtime's
(`pattern_runtime.seeding`, `triton-patterns seed-store PATH`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

# The environment variable through which a server's backends find the store.
DATA_STORE_ENV = "TRITON_PATTERNS_DATA_STORE"


class DataStore(Protocol):
    def get(self, record_id: str) -> bytes | None: ...

    def put(self, record_id: str, kind: str, data: bytes) -> None: ...


class SQLiteStore:
    """Records in one SQLite table: id, kind ("image", "text"), data (BLOB)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, kind TEXT NOT NULL, data BLOB NOT NULL)"
        )
        self._db.commit()

    def get(self, record_id: str) -> bytes | None:
        row = self._db.execute("SELECT data FROM records WHERE id = ?", (record_id,)).fetchone()
        return bytes(row[0]) if row else None

    def put(self, record_id: str, kind: str, data: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", (record_id, kind, data))
        self._db.commit()

    def put_many(self, records: Iterable[tuple[str, str, bytes]]) -> None:
        """(id, kind, data) records in one transaction: all of them or none."""
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", records)

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def close(self) -> None:
        self._db.close()
