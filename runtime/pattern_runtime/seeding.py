"""Seeding the data cache's SQLite store (`digit-<i>` PNGs, `text-<i>` texts), atomically.

A seed is written to a file beside the store (a copy of it, so records of one's own stay), in
one transaction with a marker of how many records a full seed holds, flushed to disk, then
renamed over the store: a seed cut short (a full disk, a kill) leaves the store as it was.
`ensure_seeded` re-seeds a store without the marker or with fewer seed records than it says (a
store cut short by an older seeder, or by hand).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from pathlib import Path

from pattern_kernel.data_store import SQLiteStore

DEFAULT_DIGITS = 100
_SEED_RECORDS = "SELECT COUNT(*) FROM records WHERE id LIKE 'digit-%' OR id LIKE 'text-%'"


def _seed_records(digits: int) -> list[tuple[str, str, bytes]]:
    from pattern_runtime.datasets.digits import encode_digit_png, load_test_split
    from pattern_runtime.datasets.text import generate_text_dataset

    images, _ = load_test_split()
    records = [(f"digit-{i}", "image", encode_digit_png(pixels)) for i, pixels in enumerate(images[:digits])]
    return records + [(f"text-{i}", "text", text.encode()) for i, (text, _) in enumerate(generate_text_dataset())]


def seeded_count(path: str | Path) -> int:
    """The seed records a complete seed left in the store at `path`; 0 when it has no complete seed."""
    if not Path(path).is_file():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as db:
        try:
            (marker,) = db.execute("SELECT records FROM seed").fetchone() or (0,)
            (found,) = db.execute(_SEED_RECORDS).fetchone()
        except sqlite3.DatabaseError:  # no seed table (an older or a hand-made store), or not SQLite
            return 0
    return found if marker and found >= marker else 0


def seed_store(path: str | Path, digits: int = DEFAULT_DIGITS) -> dict[str, int]:
    """Load `digit-<i>` (PNG of held-out digit i, i < `digits`) and `text-<i>` records into the
    store at `path` (created if missing), atomically; returns the counts by kind."""
    path = Path(path)
    records = _seed_records(digits)
    aside = path.with_name(f".{path.name}.seeding-{os.getpid()}")
    try:
        if path.is_file():
            shutil.copyfile(path, aside)
        store = SQLiteStore(aside)
        try:
            store.put_many(records)
        finally:
            store.close()
        with contextlib.closing(sqlite3.connect(aside)) as db, db:
            db.execute("DROP TABLE IF EXISTS seed")
            db.execute("CREATE TABLE seed (records INTEGER NOT NULL)")
            db.execute("INSERT INTO seed VALUES (?)", (len(records),))
        _fsync(aside)
        os.replace(aside, path)
        _fsync(path.parent)
    finally:
        aside.unlink(missing_ok=True)
    kinds = [kind for _, kind, _ in records]
    return {"image": kinds.count("image"), "text": kinds.count("text")}


def ensure_seeded(path: str | Path, digits: int = DEFAULT_DIGITS) -> int:
    """Seed the store at `path` unless it holds a complete seed; returns its seed records."""
    found = seeded_count(path)
    if found:
        return found
    counts = seed_store(path, digits)
    return counts["image"] + counts["text"]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
