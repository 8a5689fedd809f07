"""Finding the Debian daemons the plugin tests start (clamd, spamd)."""

from __future__ import annotations

import os
import shutil


def sbin_program(name: str) -> str | None:
    """The program's path on PATH, else in /usr/sbin (often off a user's PATH); None if absent."""
    path = shutil.which(name)
    if path is None and os.access(f"/usr/sbin/{name}", os.X_OK):
        path = f"/usr/sbin/{name}"
    return path
