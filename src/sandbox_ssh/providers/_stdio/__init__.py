"""Sockets in a sandbox over a helper's stdio, for runtimes whose only door is exec."""

from ._network import StdioNetwork

__all__ = ["StdioNetwork"]
