"""The thin client SDK of the serving patterns: `PatternClient` and `AsyncPatternClient` (one
method per pattern, see patterns.py), their answers (`Prediction`, `JobResult`) and errors
(`PatternError`); the catalogue of patterns (`patterns`), credentials and endpoints in their
modules. It imports no other part of the project: `pip install ./clients` installs it alone.

    from triton_patterns import PatternClient
    with PatternClient("127.0.0.1:8000") as client:
        print(client.canary([6.7, 3.0, 5.2, 2.3], user_id="u1").arm)
"""

from triton_patterns.async_jobs import JobResult
from triton_patterns.client import AsyncPatternClient, PatternClient, PatternError
from triton_patterns.prediction import ModelInfo, Prediction

__version__ = "0.1.0"
__all__ = ["AsyncPatternClient", "JobResult", "ModelInfo", "PatternClient", "PatternError", "Prediction"]
