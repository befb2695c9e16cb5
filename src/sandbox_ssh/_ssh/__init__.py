"""The SSH side: asyncssh adapters that know no container runtime."""

from .._logs import holding_warnings

# cryptography deprecates DSA, which asyncssh still imports: its warnings wait for logging
# (see _logs.holding_warnings), so that a JSON log holds nothing but JSON.
with holding_warnings():
    import asyncssh  # noqa: F401
