"""chinwag: a self-hosted, multi-user chat server for LLM agents."""

__version__ = "0.1.0"
