"""Process control for the local CodeDeploy agent: hook scripts run each in a session of its own
(so a timed-out script is killed with everything it started), and the checks and signals that
find and stop what those scripts left running (the app)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

KILL_GRACE_S = 2.0


@dataclass(frozen=True)
class ScriptResult:
    exit_code: int | None
    timed_out: bool = False
    killed: bool = False  # by the agent stopping, not by the script's own timeout


class ScriptRunner:
    """Runs hook scripts, each in a session (process group) of its own so a timed-out script is
    killed with everything it started, and the agent can kill what runs when it stops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._killed: set[int] = set()
        self._closed = False

    def run(
        self,
        script: Path,
        *,
        cwd: Path,
        env: Mapping[str, str],
        timeout_s: float,
        log: Path,
        sessions: set[int],
    ) -> ScriptResult:
        # Hook output goes to a file, not a pipe: the app a hook starts in the background may
        # keep inherited descriptors open, and the hook must count as done when the script is.
        with self._lock, log.open("ab") as output:
            if self._closed:
                return ScriptResult(None, killed=True)
            process = subprocess.Popen(
                _command(script),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._running[process.pid] = process
            sessions.add(process.pid)
        try:
            result = ScriptResult(process.wait(timeout=timeout_s))
        except subprocess.TimeoutExpired:
            terminate_group(process.pid)
            process.wait()
            result = ScriptResult(None, timed_out=True)
        finally:
            with self._lock:
                self._running.pop(process.pid, None)
                killed = process.pid in self._killed
        # Killed by close(): whatever the script returned, it did not finish on its own.
        return ScriptResult(None, killed=True) if killed else result

    def close(self) -> None:
        """Refuse new scripts and kill the running ones (the agent is stopping)."""
        with self._lock:
            self._closed = True
            running = list(self._running)
            self._killed.update(running)
        for pid in running:
            terminate_group(pid)


def _command(script: Path) -> list[str]:
    """Executed directly when it is executable and names its interpreter, else with bash (a zip
    made without permissions loses the exec bits)."""
    try:
        with script.open("rb") as handle:
            shebang = handle.read(2) == b"#!"
    except OSError:
        shebang = False
    if shebang and os.access(script, os.X_OK):
        return [str(script)]
    return ["bash", str(script)]


def _process_state(pid: int) -> str | None:
    """The state letter from /proc (Z for a zombie), None if gone or without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (dead, not reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _process_state(pid) != "Z"


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (zombies excluded)."""
    members = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            after_name = (entry / "stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except OSError:
            continue
        if after_name[0] != "Z" and int(after_name[2]) == pgid:
            members.append(int(entry.name))
    return members


def terminate_group(pgid: int, grace_s: float = KILL_GRACE_S) -> None:
    """SIGTERM a process group, SIGKILL what is left after ``grace_s``."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def terminate_pid(pid: int, grace_s: float = KILL_GRACE_S) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
