"""Inhouse: a self-hosted, OpenAI-compatible AI platform."""

__version__ = "0.1.0"
