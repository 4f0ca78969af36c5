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


def readme_cli_commands() -> list[list[str]]:
    """Arguments of every ``latalign …`` (or ``-m latalign.cli …``) command in the README's
    bash blocks, continuation lines joined, comments and pipes split off."""
    import shlex

    commands = []
    text = README.read_text(encoding="utf-8")
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("|"):
                words = shlex.split(part, comments=True)
                for k, word in enumerate(words):
                    if word in ("latalign", "latalign.cli"):
                        commands.append(words[k + 1 :])
                        break
    return commands


def test_readme_cli_commands_parse():
    from latalign.cli import build_parser

    commands = readme_cli_commands()
    assert len(commands) >= 5 and any(c[:1] == ["reproduce"] for c in commands)
    parser = build_parser()
    for args in commands:
        try:
            parser.parse_args(args)
        except SystemExit as e:  # argparse refuses an unknown option or value
            raise AssertionError(f"README command does not parse: latalign {' '.join(args)}") from e
