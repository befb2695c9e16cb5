"""The README's embedding example must stay valid against the public API."""

import ast
from pathlib import Path

import sandbox_ssh

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return [block.split("```")[0] for block in README.read_text().split("```python")[1:]]


def test_readme_python_examples_compile_and_import_public_names() -> None:
    blocks = python_blocks()
    assert blocks
    for block in blocks:
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "sandbox_ssh":
                for alias in node.names:
                    assert alias.name in sandbox_ssh.__all__, alias.name
