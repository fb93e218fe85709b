"""Helpers shared by the project's Python-based Triton backends (code that runs inside Triton).

The pure parts (batching, config parsing, validation) import nothing from Triton so they
can be unit-tested; `triton_glue` is the only module that touches `triton_python_backend_utils`.
"""
