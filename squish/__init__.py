"""squish: a terminal chat and agent app that runs LLMs in-process with MLX."""

__version__ = "0.1.0"
