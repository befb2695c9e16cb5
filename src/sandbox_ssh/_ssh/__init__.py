"""The SSH side: asyncssh adapters that know no container runtime."""
