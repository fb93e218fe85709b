"""The Stack's parts that need no process: where and how the data store is seeded, and that
closing a stack that started nothing is harmless (the servers: every test under tests/e2e/)."""

from __future__ import annotations

from pattern_kernel.data_store import SQLiteStore
from pattern_runtime.stack import Stack


def test_the_store_is_seeded_where_asked_and_kept_across_uses(tmp_path):
    stack = Stack(store=tmp_path / "store.sqlite", seed_digits=2)
    assert stack.store == tmp_path / "store.sqlite"
    store = SQLiteStore(stack.store)
    assert store.get("digit-1") is not None and store.get("digit-2") is None
    store.put("mine", "text", b"kept")
    assert stack.store == tmp_path / "store.sqlite" and SQLiteStore(stack.store).get("mine") == b"kept"
    stack.close()


def test_no_store_without_digits_and_a_stack_that_started_nothing_closes():
    stack = Stack(seed_digits=None)
    assert stack.store is None
    stack.close()
