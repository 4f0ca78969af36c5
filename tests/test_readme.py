"""The README's Python examples run as written (so the README never rots)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_examples():
    assert python_blocks(), "README.md lost its Python examples"


def test_readme_examples_run(capsys):
    for block in python_blocks():
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and printed[0].startswith("(") and printed[1].startswith("((")


def test_readme_install_and_test_commands_match_ci():
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    readme = README.read_text(encoding="utf-8")
    for command in ["pip install torch==2.13.0 numpy", 'pip install -e ".[dev]"', "pytest"]:
        assert command in readme and command in ci, command
