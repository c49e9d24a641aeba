"""Press Ctrl-C once under ``tox -e demo``, as a terminal does, and check it ends cleanly.

Runs the command in a pseudo-terminal of its own (a new session, the pty as controlling
terminal), waits for the demo's "press Ctrl-C" line, sends SIGINT to the terminal's
foreground process group (what the terminal driver does on Ctrl-C), and requires exit
status 0 and no traceback in the output. Exit status: 0 when it ended cleanly, 1 otherwise.

    python .ci/demo_ctrl_c.py python3 -m tox -e demo -- --port 8123
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time

READY = b"press Ctrl-C to stop"
START_SECONDS = 600
STOP_SECONDS = 60


def _own_terminal() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def main(command: list[str]) -> int:
    main_fd, child_fd = pty.openpty()
    process = subprocess.Popen(
        command, stdin=child_fd, stdout=child_fd, stderr=child_fd, preexec_fn=_own_terminal
    )
    os.close(child_fd)
    output = b""
    interrupted_at: float | None = None
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        readable, _, _ = select.select([main_fd], [], [], 0.5)
        if readable:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # the pty is closed once every process holding it is gone
                chunk = b""
            output += chunk
            if not chunk and process.poll() is not None:
                break
        elif process.poll() is not None:
            break
        if interrupted_at is None and READY in output:
            os.killpg(os.tcgetpgrp(main_fd), signal.SIGINT)
            interrupted_at = time.monotonic()
            deadline = interrupted_at + STOP_SECONDS
    if process.poll() is None:
        process.kill()
    status = process.wait()
    text = output.decode(errors="replace")
    sys.stdout.write(text)
    problems = []
    if interrupted_at is None:
        problems.append(f"the demo never printed {READY.decode()!r}")
    if status != 0:
        problems.append(f"exit status {status}")
    if "Traceback" in text:
        problems.append("a traceback in the output")
    print(f"\n--- one Ctrl-C: {'; '.join(problems) or 'exit status 0, no traceback'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
