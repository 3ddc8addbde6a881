"""Running a command the way a person does: on a terminal, typing answers to its prompts."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
from pathlib import Path

import pytest

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LIMIT = 300.0  # seconds: a bound on a hung command (generous: CI machines are loaded), never a synchronisation


def run_in_terminal(command: str, cwd: Path, env: dict[str, str], answers: dict[str, str]) -> tuple[int, str]:
    """Run `command` (bash) with a terminal as stdin and stdout, as a newcomer does; type `answers[prompt]` when
    the output ends with that prompt. Returns the exit code and the output (no colour, \\n line ends)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    output, pending = b"", dict(answers)
    try:
        while True:
            ready, _, _ = select.select([master], [], [], LIMIT)
            if not ready:
                proc.kill()
                pytest.fail(f"{command}: no output for {LIMIT} s; so far:\n{output.decode(errors='replace')}")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal has exited
                break
            if not chunk:
                break
            output += chunk
            text = ANSI.sub("", output.decode(errors="replace"))
            for prompt in [p for p in pending if text.rstrip(" ").endswith(p.rstrip(" "))]:
                os.write(master, pending.pop(prompt).encode() + b"\n")
    finally:
        os.close(master)
    return proc.wait(timeout=LIMIT), ANSI.sub("", output.decode(errors="replace")).replace("\r\n", "\n")
