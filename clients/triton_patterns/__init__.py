"""The thin client SDK of the serving patterns: `PatternClient` and `AsyncPatternClient`, the
catalogue of patterns (`patterns`), job results, credentials and endpoints, and the edge client."""

__version__ = "0.1.0"
