"""The in-server kernel of the pattern backends: what runs inside tritonserver and in the server
image, and nothing else of the project.

It holds the Triton glue (`triton_glue`: inputs, responses, errors, BLS calls, metrics), the
backends' base class (`pattern_model.PatternModel`), what their specs declare (`spec`:
parameters, extra outputs, referenced models) and the registry that finds each backend's spec
beside its model.py (`specs`), both importable without Triton, for the tools; the
helpers the backends share (batching, validation, model configs, Redis, caches, queues, routing,
breakers), the server's command line (`server_command`, `access`), the server image's entry point
(`container`) and its readiness probe (`probe`). It imports nothing else of this project: copy a
backend folder into your repository and install this package (`pip install ./kernel`).
"""

__version__ = "0.1.0"
