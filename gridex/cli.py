"""The ``gridex`` command line: serve, worker, database and admin tasks."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import structlog
import typer

from gridex import __version__
from gridex.auth.models import Role
from gridex.core.config import InsecureConfiguration, Settings, get_settings

# Plain Click help: it lists an option's choices and shows flags as flags (the rich renderer of
# this Typer version labels every flag, --help included, "<bool>").
_TYPER = {"no_args_is_help": True, "rich_markup_mode": None}
app = typer.Typer(help="Gridex: peer-to-peer energy exchange.", **_TYPER)  # type: ignore[arg-type]
db_app = typer.Typer(help="Database tasks.", **_TYPER)  # type: ignore[arg-type]
admin_app = typer.Typer(help="Administration tasks.", **_TYPER)  # type: ignore[arg-type]
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
ledger_app = typer.Typer(help="Ledger checks.", **_TYPER)  # type: ignore[arg-type]
payments_app = typer.Typer(help="Payment tasks.", **_TYPER)  # type: ignore[arg-type]
chain_app = typer.Typer(help="Chain mirror checks.", **_TYPER)  # type: ignore[arg-type]
app.add_typer(ledger_app, name="ledger")
app.add_typer(chain_app, name="chain")
app.add_typer(payments_app, name="payments")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gridex {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Gridex: peer-to-peer energy exchange."""


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar on stderr for a command that can run long; ``step(name)`` advances it.
    Shown only on a terminal, so that logs and pipes get the command's own lines alone."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task(description, total=total)

        def step(name: str) -> None:
            bar.update(task, advance=1, description=f"{description}: {name}")

        yield step


def _check_config() -> None:
    settings = get_settings()
    try:
        settings.check_production_safety()
    except InsecureConfiguration as exc:
        typer.echo(f"Refusing to start: {exc}", err=True)
        raise typer.Exit(code=2) from exc


def _configure_logging() -> None:
    from gridex.core.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="Number of worker processes.")] = 1,
    demo: Annotated[
        bool, typer.Option("--demo/--no-demo", help="Seed a demo community (not in production).")
    ] = False,
    migrate: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Apply migrations before serving.")
    ] = True,
) -> None:
    """Apply migrations and serve the API (Swagger UI at /docs)."""
    import uvicorn

    from gridex.core.migrate import upgrade

    _check_config()
    _configure_logging()
    settings = get_settings()
    if migrate:
        upgrade(settings.database_url)
    if demo:
        _seed_demo()
        # The workers read their settings from the environment: keep the demo trading there.
        os.environ["GRIDEX_DEMO_SIMULATION"] = "true"
        get_settings.cache_clear()
    if workers > 1:
        # Metrics of all workers are aggregated through files in a shared directory.
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="gridex-prom-"))
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    structlog.get_logger("gridex.cli").info(
        "serving", url=url, docs=f"{url}/docs", workers=workers, demo=demo
    )
    uvicorn.run(
        "gridex.asgi:app",
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        # The app believes forwarded headers only from GRIDEX_TRUSTED_PROXIES (see create_app).
        proxy_headers=False,
    )


@app.command()
def worker() -> None:
    """Run the scheduled jobs without serving HTTP (one leader per job across workers)."""
    from gridex.app import build_runtime, prepare

    _check_config()
    _configure_logging()
    settings = get_settings()

    async def run() -> None:
        runtime = build_runtime(settings)
        await prepare(runtime)
        runtime.jobs.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        typer.echo(f"gridex worker {runtime.jobs.holder}: {len(runtime.jobs.jobs)} jobs", err=True)
        await stop.wait()
        runtime.jobs.shutdown()
        await runtime.db.dispose()

    asyncio.run(run())


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "heads") -> None:
    """Apply migrations up to REVISION (default: every head) and create the configured regions
    (GRIDEX_REGIONS) that do not exist yet."""
    from gridex.core.clock import SystemClock
    from gridex.core.db import Database
    from gridex.core.migrate import upgrade
    from gridex.regions.service import ensure_regions

    settings = get_settings()
    upgrade(settings.database_url, revision)

    async def regions() -> None:
        db = Database(settings.database_url)
        try:
            await ensure_regions(db, settings.regions, SystemClock().now())
        finally:
            await db.dispose()

    if revision == "heads":
        asyncio.run(regions())
    typer.echo(f"database at {revision}; regions: {', '.join(settings.regions)}")


@admin_app.command("create-user")
def create_user(
    username: Annotated[str, typer.Option(help="Sign-in name (letters, digits, . _ -).")],
    email: Annotated[str, typer.Option(help="Email address; the account is already verified.")],
    role: Annotated[Role, typer.Option(help="The account's role.")] = Role.admin,
    region: Annotated[
        str | None, typer.Option(help="Region of a member or of the operator's work.")
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(help="Asked for (hidden, twice) when not given; avoid it in shell history."),
    ] = None,
) -> None:
    """Create a verified, active account of any role."""
    from gridex.users.bootstrap import create_verified_user

    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user_id = asyncio.run(
            create_verified_user(
                get_settings(),
                username=username,
                email=email,
                password=password,
                role=role.value,
                region=region,
            )
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"created {role.value} {username} ({user_id})")


@ledger_app.command("verify")
def ledger_verify() -> None:
    """Recompute every balance and the trial balance from the postings; exit 1 on a difference."""
    from gridex.ledger.jobs import verify_url
    from gridex.ledger.repository import VERIFY_STEPS

    with progress_bar("verifying the ledger", len(VERIFY_STEPS)) as step:
        report = asyncio.run(verify_url(get_settings().database_url, step))
    for problem in report.problems:
        typer.echo(f"MISMATCH {problem}", err=True)
    typer.echo(
        f"{'ok' if report.ok else 'FAILED'}: {report.accounts} accounts, {report.entries} entries, "
        f"{report.postings} postings, trial balance {report.trial_balance_micros} micros"
    )
    if not report.ok:
        raise typer.Exit(code=1)


@chain_app.command("verify")
def chain_verify() -> None:
    """Compare every account's ledger balance (a user's never below zero) with its tokens on
    chain; exit 1 on a difference."""
    from gridex.app import build_runtime
    from gridex.chain.jobs import verify
    from gridex.chain.reconcile import Reconciliation

    async def run() -> Reconciliation:
        runtime = build_runtime(get_settings())
        try:
            return await verify(runtime)
        finally:
            await runtime.db.dispose()

    result = asyncio.run(run())
    for d in result.mismatches:
        typer.echo(
            f"MISMATCH {d.account}: ledger {d.ledger_micros} chain {d.chain_micros} "
            f"(difference {d.difference_micros}) micros",
            err=True,
        )
    pending = f", {result.in_flight} transactions in flight" if result.in_flight else ""
    typer.echo(f"{'ok' if result.ok else 'FAILED'}: {result.accounts} accounts{pending}")
    if not result.ok:
        raise typer.Exit(code=1)


@chain_app.command("reseal-keys")
def chain_reseal_keys() -> None:
    """After rotating GRIDEX_SECRET_KEY (the old one in GRIDEX_CHAIN_PREVIOUS_SECRET_KEYS): seal
    every custodial key with the new secret."""
    from gridex.app import build_runtime
    from gridex.chain.service import reseal_keys

    async def run() -> int:
        runtime = build_runtime(get_settings())
        try:
            return await reseal_keys(runtime)
        finally:
            await runtime.db.dispose()

    typer.echo(f"resealed {asyncio.run(run())} custodial keys")


@payments_app.command("complete")
def payments_complete(
    intent_id: Annotated[uuid.UUID, typer.Argument(help="The payment intent's id (a UUID).")],
    failed: Annotated[bool, typer.Option("--failed", help="Send a failure instead.")] = False,
) -> None:
    """Complete a top-up without a provider (refused in production): signs its webhook and
    passes it through the webhook code path."""
    from gridex.core.errors import GridexError
    from gridex.payments.jobs import complete_by_hand
    from gridex.payments.schemas import WebhookOut

    async def complete() -> WebhookOut:
        from gridex.app import build_runtime

        runtime = build_runtime(get_settings())
        try:
            return await complete_by_hand(runtime, intent_id, succeeded=not failed)
        finally:
            await runtime.pubsub.close()
            await runtime.db.dispose()

    try:
        result = asyncio.run(complete())
    except (GridexError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"payment {intent_id}: {result.outcome}")


def _seed_demo() -> None:
    settings = get_settings()
    if settings.env == "production":
        typer.echo("--demo is ignored in production", err=True)
        return
    for line in asyncio.run(_demo_community(settings)):
        typer.echo(line, err=True)


async def _demo_community(settings: Settings) -> list[str]:
    """Demo users, then their meters, readings, money and orders (each created once)."""
    from gridex.app import build_runtime
    from gridex.demo import SEED_STEPS, create_community

    rt = build_runtime(settings)
    try:
        with progress_bar("seeding the demo", SEED_STEPS) as step:
            return await create_community(rt, progress=step)
    finally:
        await rt.pubsub.close()
        await rt.db.dispose()
