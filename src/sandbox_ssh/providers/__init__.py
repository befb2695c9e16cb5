"""Built-in sandbox providers. Each knows one runtime and nothing of SSH."""
