#!/usr/bin/env python3
"""Print the README's table of `serve` settings, generated from the one list of settings."""

from sandbox_ssh._cli.options import SERVE_SETTINGS
from sandbox_ssh._cli.settings import markdown_table

print(markdown_table(SERVE_SETTINGS), end="")
