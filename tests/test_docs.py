"""Documented commands are tests: every fenced `bash` block of the README and of `docs/*.md` runs
here, in order, exactly as written, in one temporary folder (the README's first, so the how-to
pages can build on what its quickstart made). A block preceded by `<!-- not run: REASON -->` is
skipped, and must say why."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
PAGES = [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"<!-- not run: (?P<reason>.+\S) -->")


def bash_blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """(line, code, reason it is not run or None) of each fenced bash block of `page`."""
    lines = page.read_text().splitlines()
    blocks, number = [], 0
    while number < len(lines):
        if lines[number].strip() == "```bash":
            end = lines.index("```", number + 1)
            before = next((line for line in reversed(lines[:number]) if line.strip()), "")
            marked = NOT_RUN.fullmatch(before.strip())
            blocks.append((number + 1, "\n".join(lines[number + 1:end]), marked["reason"] if marked else None))
            number = end
        number += 1
    return blocks


def test_every_skipped_block_says_why():
    for page in PAGES:
        for line, _, reason in bash_blocks(page):
            assert reason is None or len(reason) > 10, f"{page.name}:{line}"
    assert any(reason is None for _, _, reason in bash_blocks(REPOSITORY / "README.md"))


def test_documented_commands_run_as_written(tmp_path):
    (tmp_path / "examples").symlink_to(REPOSITORY / "examples")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "SOFTPROMPT_DATA"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    ran = 0
    for page in PAGES:
        for line, code, reason in bash_blocks(page):
            if reason is not None:
                continue
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, (f"{page.relative_to(REPOSITORY)}:{line} failed:\n{code}\n"
                                          f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
            ran += 1
    assert ran >= 4
    prediction = (tmp_path / "serve.json").read_text()
    assert '"url"' in prediction
