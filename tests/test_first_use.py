"""Gridex as a newcomer meets it: a real server started the documented way (`gridex serve
--demo`), a client generated from its API document, and the shell examples of the docs run
against it so that they stay true."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from gridex.users.bootstrap import DEMO_PASSWORD

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCUMENTED_ADDRESSES = ("localhost:8080", "127.0.0.1:8080")
STARTUP_SECONDS = 90
SERVER_LOG: Path | None = None
SERVE = (sys.executable, "-m", "gridex", "serve", "--host", "127.0.0.1")
GENERATE = (sys.executable, "-m", "openapi_python_client", "generate", "--meta", "none")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _server_env(data_dir: Path) -> dict[str, str]:
    """The environment of a default install: nothing of the caller's GRIDEX_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDEX_")}
    env.update(
        GRIDEX_DATA_DIR=str(data_dir),
        GRIDEX_LOG_JSON="false",
    )
    return env


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`gridex serve --demo` on a free loopback port, with its own data directory; its log is
    `server.log` there."""
    data_dir = tmp_path_factory.mktemp("live")
    global SERVER_LOG
    SERVER_LOG = data_dir / "server.log"
    log = (data_dir / "server.log").open("wb")
    port = _free_port()
    process = subprocess.Popen(
        [*SERVE, "--port", str(port), "--demo"],
        cwd=data_dir,
        env=_server_env(data_dir),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"gridex serve exited: {(data_dir / 'server.log').read_text()}")
            try:
                if httpx.get(f"{base}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gridex serve did not answer: {(data_dir / 'server.log').read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_the_server_says_where_it_listens(live_server: str) -> None:
    assert SERVER_LOG is not None
    lines = SERVER_LOG.read_text().splitlines()
    serving = [line for line in lines if "serving" in line]
    assert serving, lines[:20]
    assert f"url={live_server}" in serving[0]
    assert f"docs={live_server}/docs" in serving[0]


# --- the generated client --------------------------------------------------------------------

# Green Button feeds are Atom XML and invoices PDF; the generator sends and returns any body of
# an unknown media type as bytes when told so. No post-hooks: the generated code is imported,
# not committed.
OUTPUT = "client/gridex_client"
GENERATOR_CONFIG = """\
content_type_overrides:
  application/atom+xml: application/octet-stream
  application/pdf: application/octet-stream
post_hooks: []
"""


def _generate(spec: dict[str, Any], workdir: Path) -> str:
    (workdir / "openapi.json").write_text(json.dumps(spec))
    (workdir / "config.yaml").write_text(GENERATOR_CONFIG)
    result = subprocess.run(
        [*GENERATE, "--path", "openapi.json", "--config", "config.yaml", "--output-path", OUTPUT],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_a_generated_client_covers_every_operation_and_talks_to_a_live_server(
    live_server: str, tmp_path: Path
) -> None:
    spec = httpx.get(f"{live_server}/openapi.json").json()
    validate(spec)

    output = _generate(spec, tmp_path)
    assert "warning" not in output.lower(), output
    package = tmp_path / "client" / "gridex_client"
    modules = {p.stem for p in (package / "api").glob("*/*.py") if p.stem != "__init__"}
    operations = {op["operationId"] for item in spec["paths"].values() for op in item.values()}
    assert operations - modules == set()

    sys.path.insert(0, str(tmp_path / "client"))
    try:
        client_module = importlib.import_module("gridex_client")
        login = importlib.import_module("gridex_client.api.auth.login")
        list_meters = importlib.import_module("gridex_client.api.meters.list_meters")
        login_in = importlib.import_module("gridex_client.models.login_in")

        with client_module.Client(base_url=live_server) as anonymous:
            tokens = login.sync(
                client=anonymous,
                body=login_in.LoginIn.from_dict({"username": "alice", "password": DEMO_PASSWORD}),
            )
        assert tokens.user.username == "alice"
        with client_module.AuthenticatedClient(
            base_url=live_server, token=tokens.access_token
        ) as alice:
            page = list_meters.sync(client=alice)
        assert [m.serial for m in page.items] == ["DEMO-ALICE-01"]
        assert page.total == 1
    finally:
        sys.path.remove(str(tmp_path / "client"))
        for name in [
            m for m in sys.modules if m == "gridex_client" or m.startswith("gridex_client.")
        ]:
            del sys.modules[name]


# --- the docs' shell examples ----------------------------------------------------------------

# A fenced block whose info string says `runnable` (```sh runnable) is run, in order with the
# other runnable blocks of its file, in one bash; each must exit 0.
_BLOCK = re.compile(r"^```(?:sh|bash) runnable\n(.*?)^```$", re.M | re.S)

# curl fails on an HTTP error, so an example answered 4xx or 5xx fails its block.
_PRELUDE = """\
set -euo pipefail
curl() { command curl --silent --show-error --fail-with-body "$@"; }
"""


def _runnable_blocks() -> list[tuple[Path, list[str]]]:
    found = []
    for document in DOCUMENTS:
        blocks = _BLOCK.findall(document.read_text())
        if blocks:
            found.append((document, blocks))
    return found


def test_the_docs_have_runnable_examples() -> None:
    names = {document.name for document, _ in _runnable_blocks()}
    assert {"README.md", "auth.md", "devices.md", "market.md"} <= names


@pytest.mark.parametrize(
    ("document", "blocks"),
    [pytest.param(d, b, id=d.name) for d, b in _runnable_blocks()],
)
def test_the_docs_shell_examples_run_against_a_live_server(
    live_server: str, document: Path, blocks: list[str], tmp_path: Path
) -> None:
    for tool in ("bash", "curl", "jq"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    address = live_server.removeprefix("http://")
    script = _PRELUDE
    for number, block in enumerate(blocks, 1):
        for documented in DOCUMENTED_ADDRESSES:
            block = block.replace(documented, address)
        script += f"echo '--- block {number}' >&2\n{block}\n"
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"{document.name}: the last block started failed\n{result.stderr}\n{result.stdout}"
    )
