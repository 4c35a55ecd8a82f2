"""Every Python block in the README runs: one namespace per section, blocks in order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def sections() -> dict[str, list[str]]:
    """Section title -> its python code blocks, in order (sections without code are left out)."""
    parts = re.split(r"(?m)^(?=## )", README.read_text())[1:]
    found = {}
    for part in parts:
        blocks = re.findall(r"```python\n(.*?)```", part, flags=re.DOTALL)
        if blocks:
            found[part.splitlines()[0][3:]] = blocks
    return found


def test_readme_has_examples():
    assert len(sections()) >= 5


@pytest.mark.parametrize("title", sorted(sections()))
def test_readme_section_runs(title):
    namespace: dict = {"__name__": "readme"}
    for block in sections()[title]:
        exec(compile(block, f"README.md ({title})", "exec"), namespace)
