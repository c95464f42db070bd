from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gridex import __version__
from gridex.cli import app
from gridex.core.config import get_settings

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GRIDEX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("GRIDEX_DATABASE_URL", raising=False)
    monkeypatch.setenv("GRIDEX_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("GRIDEX_ARGON2_MEMORY_KIB", "1024")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"gridex {__version__}"


def test_python_dash_m_is_the_same_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gridex", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"gridex {__version__}"


def test_db_upgrade_and_create_user(data_dir: Path) -> None:
    upgraded = runner.invoke(app, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert (data_dir / "gridex.db").exists()
    args = ["admin", "create-user", "--username", "root", "--email", "root@example.org"]
    created = runner.invoke(app, [*args, "--password", "Str0ng-Admin-Pass", "--role", "admin"])
    assert created.exit_code == 0, created.output
    assert "created admin root" in created.stdout
    again = runner.invoke(app, [*args, "--password", "Str0ng-Admin-Pass"])
    assert again.exit_code == 1
    assert "already taken" in again.output
    weak = runner.invoke(
        app,
        [
            "admin",
            "create-user",
            "--username",
            "u2",
            "--email",
            "u2@example.org",
            "--password",
            "weak",
        ],
    )
    assert weak.exit_code == 1
    bad_role = runner.invoke(
        app,
        [
            "admin",
            "create-user",
            "--username",
            "u3",
            "--email",
            "u3@example.org",
            "--password",
            "Str0ng-Admin-Pass",
            "--role",
            "emperor",
        ],
    )
    assert bad_role.exit_code == 2
    assert "'admin', 'operator', 'prosumer', 'consumer', 'investor'" in bad_role.output


def test_create_user_asks_for_the_password_twice_without_echo(data_dir: Path) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    args = ["admin", "create-user", "--username", "ops", "--email", "ops@example.org"]
    mismatch = runner.invoke(
        app,
        [*args, "--role", "operator", "--region", "campus-north"],
        input="Str0ng-Ops-Pass\nother\n",
    )
    assert mismatch.exit_code != 0
    assert "Str0ng-Ops-Pass" not in mismatch.output
    created = runner.invoke(
        app,
        [*args, "--role", "operator", "--region", "community"],
        input="Str0ng-Ops-Pass\nStr0ng-Ops-Pass\n",
    )
    assert created.exit_code == 0, created.output
    assert "created operator ops" in created.output
    elsewhere = runner.invoke(
        app,
        [
            "admin",
            "create-user",
            "--username",
            "xavier",
            "--email",
            "xavier@example.org",
            "--region",
            "nowhere",
        ],
        input="Str0ng-Ops-Pass\nStr0ng-Ops-Pass\n",
    )
    assert elsewhere.exit_code == 1
    assert "there is no region 'nowhere' (regions: community)" in elsewhere.output
    assert "Str0ng-Ops-Pass" not in created.output


def test_help_lists_choices_and_shows_flags_as_flags() -> None:
    top = runner.invoke(app, ["--help"])
    assert "<bool>" not in top.output
    create = runner.invoke(app, ["admin", "create-user", "--help"])
    assert "admin|operator|prosumer|consumer|investor" in create.output
    assert "[required]" not in create.output.split("--password")[1]


def test_payments_complete_says_what_a_bad_id_is(data_dir: Path) -> None:
    result = runner.invoke(app, ["payments", "complete", "nonexistent"])
    assert result.exit_code == 2
    assert "valid UUID" in result.output
    assert "hexadecimal" not in result.output


def test_serve_refuses_insecure_production(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDEX_ENV", "production")
    monkeypatch.setenv("GRIDEX_SECRET_KEY", "too-short")
    get_settings.cache_clear()
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "Refusing to start" in result.output
    assert "GRIDEX_SECRET_KEY" in result.output
    worker = runner.invoke(app, ["worker"])
    assert worker.exit_code == 2


def test_ledger_verify_reports_each_check_and_prints_no_bar_into_a_pipe(data_dir: Path) -> None:
    from gridex.ledger.jobs import verify_url
    from gridex.ledger.repository import VERIFY_STEPS

    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    steps: list[str] = []
    report = asyncio.run(verify_url(get_settings().database_url, steps.append))
    assert report.ok
    assert steps == list(VERIFY_STEPS)

    verified = runner.invoke(app, ["ledger", "verify"])
    assert verified.exit_code == 0, verified.output
    # Not a terminal: the command's own line only, no progress bar drawn into the output.
    assert "verifying the ledger" not in verified.output
    assert "ok: 0 accounts, 0 entries, 0 postings, trial balance 0 micros" in verified.stdout


def test_progress_bar_draws_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from gridex import cli

    drawn = io.StringIO()
    terminal = Console(file=drawn, force_terminal=True, width=80)
    monkeypatch.setattr(cli.sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("rich.console.Console", lambda **_: terminal)
    with cli.progress_bar("seeding the demo", 2) as step:
        step("DEMO-ALICE-01")
        step("orders")
    assert "seeding the demo" in drawn.getvalue()
    assert "2/2" in drawn.getvalue()
