"""ML serving patterns on NVIDIA Triton: launcher, client SDK, CLI and helpers shared by backends."""

__version__ = "0.1.0"
