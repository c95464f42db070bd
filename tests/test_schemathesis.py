"""schemathesis over the live OpenAPI document, as a member and as an admin.

A real ``gridex serve`` (its own SQLite file, jobs and rate limits off) is fuzzed over HTTP: every
operation with a small, fixed example budget (``EXAMPLES``), checking that nothing answers 5xx,
that responses match their documented schemas, and that every 4xx is in the API's error shape.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from gridex.auth.models import Role
from gridex.core.config import Settings
from gridex.core.migrate import upgrade
from tests.factories import PASSWORD, make_user

# Examples per operation and caller: about a minute for the whole API on a small machine.
EXAMPLES = 3
# Operations that end the caller's own session: fuzzing them would sign the caller out.
SELF_ENDING = ("/api/v1/auth/logout", "/api/v1/auth/logout-all", "/api/v1/auth/password/change")


@dataclass
class Live:
    base: str
    headers: dict[str, dict[str, str]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _accounts(database_url: str) -> None:
    from gridex.app import build_runtime

    rt = build_runtime(
        Settings(
            _env_file=None,  # type: ignore[call-arg]
            env="test",
            database_url=database_url,
            secret_key="schemathesis-" + "k" * 40,
            argon2_time_cost=1,
            argon2_memory_kib=1024,
            regions=["north"],
        )
    )
    try:
        await make_user(rt, role=Role.prosumer, username="fuzz-member")
        await make_user(rt, role=Role.admin, username="fuzz-admin")
    finally:
        await rt.db.dispose()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    directory: Path = tmp_path_factory.mktemp("fuzz")
    database_url = f"sqlite+aiosqlite:///{directory / 'gridex.db'}"
    upgrade(database_url)
    asyncio.run(_accounts(database_url))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDEX_")}
    env.update(
        GRIDEX_ENV="test",
        GRIDEX_DATABASE_URL=database_url,
        GRIDEX_DATA_DIR=str(directory),
        GRIDEX_SECRET_KEY="schemathesis-" + "k" * 40,
        GRIDEX_RUN_JOBS="false",
        GRIDEX_RATE_LIMIT_ENABLED="false",
        GRIDEX_ARGON2_TIME_COST="1",
        GRIDEX_ARGON2_MEMORY_KIB="1024",
        GRIDEX_REGIONS="north",
        GRIDEX_LOG_LEVEL="WARNING",
        GRIDEX_ACCESS_TOKEN_MINUTES="60",
    )
    log = (directory / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "gridex", "serve", "--port", str(port), "--no-migrate"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health/live").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError((directory / "server.log").read_text())
        headers = {}
        for who in ("member", "admin"):
            login = httpx.post(
                f"{base}/api/v1/auth/login",
                json={"username": f"fuzz-{who}", "password": PASSWORD},
            )
            assert login.status_code == 200, login.text
            headers[who] = {"Authorization": f"Bearer {login.json()['access_token']}"}
        yield Live(base, headers)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def error_shape(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool:
    """Every 4xx is ``{"error": {"code", "message", ...}, "request_id"}``."""
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict), body
        error = body.get("error")
        assert isinstance(error, dict), body
        assert isinstance(error.get("code"), str), body
        assert error["code"].isupper(), body
        assert isinstance(error.get("message"), str), body
        assert isinstance(body.get("request_id"), str), body
    return True


fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _fuzz(live: Live, who: str) -> None:
    """Every operation, ``EXAMPLES`` cases each; all failures reported together."""
    schema = schemathesis.openapi.from_url(f"{live.base}/openapi.json")
    failures: list[str] = []
    operations = 0
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in SELF_ENDING:
            continue
        operations += 1

        # Valid input (responses must match their schemas) and invalid input (a 4xx in the
        # error shape, never a 5xx).
        @given(
            case=st.one_of(
                operation.as_strategy(GenerationMode.POSITIVE),
                operation.as_strategy(GenerationMode.NEGATIVE),
            )
        )
        @fuzz_settings
        def run(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(
                base_url=live.base,
                headers=live.headers[who],
                checks=[not_a_server_error, response_schema_conformance, error_shape],
            )

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:2000])
    assert operations > 50
    assert calls >= 2 * operations, (calls, operations)
    assert failures == [], f"{len(failures)} operations failed as {who}:\n" + "\n\n".join(failures)


def test_api_as_member(live: Live) -> None:
    _fuzz(live, "member")


def test_api_as_admin(live: Live) -> None:
    _fuzz(live, "admin")
