"""`gridex serve --demo` on a free port in a scratch directory, as a newcomer's `make run` starts
it: migrations, the demo community, the jobs and the web app, in a real process over a socket.
Shared by the browser tests and `bench/web.py`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

CHROMIUM = os.environ.get("GRIDEX_TEST_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DemoServer:
    """Start with ``with DemoServer() as server: server.base`` (the process ends on exit)."""

    def __init__(self, **env: str) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="gridex-web-"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # Only what this server is told: no GRIDEX_* of the caller's shell leaks in.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDEX_")}
        self.env.update(
            {
                "GRIDEX_ENV": "development",
                "GRIDEX_DATA_DIR": str(self.workdir),
                "GRIDEX_LOG_JSON": "true",
                "GRIDEX_PUBLIC_DOMAIN": f"127.0.0.1:{self.port}",
                "GRIDEX_PUBLIC_URL": self.base,
                **env,
            }
        )
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DemoServer:
        log = (self.workdir / "serve.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gridex", "serve", "--demo", "--port", str(self.port)],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gridex serve exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.base}/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.__exit__(None, None, None)
        raise RuntimeError(f"gridex serve did not start: {self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "serve.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)
