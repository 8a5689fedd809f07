"""Run a full-screen program (mutt) on a pseudo-terminal, bounded in time."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time


def run_on_pty(argv, home, timeout: float, rows: int = 40, cols: int = 160) -> tuple[int | None, bytes]:
    """(exit status or None if it ran out of time, everything it wrote). The
    program gets a rows x cols terminal, HOME=home, TERM=xterm and its own
    session; it is killed at the deadline."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    environment = {"HOME": str(home), "TERM": "xterm", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                   "LANG": "C.UTF-8"}
    process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=environment,
                               cwd=str(home), start_new_session=True)
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    finished = False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the program exited and closed the terminal
                    chunk = b""
                if not chunk:
                    finished = True
                    break
                output += chunk
            elif process.poll() is not None:
                finished = True
                break
        if finished:
            return process.wait(timeout=10), bytes(output)
        return None, bytes(output)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        os.close(master)
