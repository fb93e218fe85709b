"""Deterministic, seeded, idempotent export of the project's models into `model_repository/`.

Run `python -m export` (see `export/__main__.py`). One module per model family
(iris, digits, text, heavy); shared manifest/parity/idempotency code is in `manifest.py`.
"""
