"""Diminuendo: the client gateway of the agent platform."""

__version__ = "0.3.0"
