"""What a user of command-line tools expects: `--version`, progress bars on long work that show on
a terminal and keep logs clean."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

BIN = Path(sys.executable).parent / "softprompt"
DESIGNED = ["evaluate", "--task", "sst2", "--model", "t5-tiny-random", "--max-examples", "24",
            "--text-prompt", "Review: {sentence}\\nSentiment:"]


def _run(*args: str, terminal: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "TERM")}
    env |= {"FORCE_COLOR": "1", "TERM": "xterm"} if terminal else {}   # rich then draws as on a terminal
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=300, env=env)


def test_version_prints_the_installed_version():
    done = _run("--version", terminal=False)
    assert done.returncode == 0 and done.stdout.strip() == f"softprompt {version('softprompt')}"


def test_long_evaluations_show_a_progress_bar_on_a_terminal_only():
    on_terminal = _run(*DESIGNED, terminal=True)
    assert on_terminal.returncode == 0, on_terminal.stderr[-2000:]
    assert "designed prompt on sst2" in on_terminal.stderr and "24/24" in on_terminal.stderr
    in_a_log = _run(*DESIGNED, terminal=False)
    assert in_a_log.returncode == 0 and "designed prompt on sst2" not in in_a_log.stderr
    assert in_a_log.stdout.splitlines()[-1] == on_terminal.stdout.splitlines()[-1]   # same metrics either way
