"""The web app in a real browser (Debian's chromium driven by Playwright) against `gridex serve
--demo` on a free port: sign-in paths, a member's order from the form to the book, a live update,
the operator's view, a phone-width layout. Screenshots go to GRIDEX_SCREENSHOTS (docs/img to
refresh the README's) or to the test's temporary directory.

Skips when Playwright or the browser is missing (`.ci/run` installs both)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import base58
import httpx
import pytest
from nacl.signing import SigningKey

from gridex.users.bootstrap import DEMO_PASSWORD
from tests.web.live_server import CHROMIUM, DemoServer

sync_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no browser at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect  # noqa: E402

API = "/api/v1"
TIMEOUT_MS = 20_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    # One-minute epochs with a 10-second gate: a market that clears while the tests run.
    with DemoServer(
        GRIDEX_EPOCH_MINUTES="1",
        GRIDEX_GATE_CLOSURE_SECONDS="10",
        GRIDEX_RATE_LIMIT_AUTH="300/minute",
        GRIDEX_ARGON2_TIME_COST="1",
        GRIDEX_ARGON2_MEMORY_KIB="8192",
    ) as running:
        place_crossing_orders(running)
        yield running


def place_crossing_orders(server: DemoServer, epochs: int = 4) -> None:
    """Alice and Bob offer, Dave bids above them, in the next epochs: trades to come. (Alice's
    meter exports at most 133 Wh a minute: her offers in one epoch stay below that.)"""
    current = httpx.get(
        f"{server.base}{API}/market/epochs/current", headers=api_login(server, "dave")
    ).json()["open"]
    start = datetime.fromisoformat(current["start"])
    length = datetime.fromisoformat(current["end"]) - start
    orders = [
        ("alice", "sell", "0.030", "0.0950"),
        ("bob", "sell", "0.030", "0.1000"),
        ("dave", "buy", "0.050", "0.1300"),
    ]
    headers = {name: api_login(server, name) for name in ("alice", "bob", "dave")}
    for i in range(epochs):
        epoch = (start + i * length).isoformat()
        for name, side, kwh, price in orders:
            body = {"side": side, "quantity_kwh": kwh, "limit_price": price, "epoch": epoch}
            placed = httpx.post(
                f"{server.base}{API}/market/orders", json=body, headers=headers[name]
            )
            # The next epoch's gate may close between reading it and ordering.
            assert placed.status_code == 201 or placed.json()["error"]["code"] == "GATE_CLOSED"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("GRIDEX_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
def page(browser: Browser, server: DemoServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.base)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert errors == [], errors  # no script error on any page


def api_login(server: DemoServer, username: str) -> dict[str, str]:
    response = httpx.post(
        f"{server.base}{API}/auth/login", json={"username": username, "password": DEMO_PASSWORD}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def sign_in(page: Page, username: str, password: str = DEMO_PASSWORD) -> None:
    page.goto("/")
    page.get_by_label("Username or email").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def wait_for_chart(page: Page) -> None:
    page.wait_for_function("() => performance.getEntriesByName('gridex:first-chart').length > 0")


def screenshot(page: Page, path: Path) -> None:
    """A full-page picture without the passing messages in the corner."""
    page.locator("#toasts").evaluate("box => box.replaceChildren()")
    page.screenshot(path=str(path), full_page=True)


def session_storage(page: Page) -> dict[str, Any] | None:
    value: dict[str, Any] | None = page.evaluate(
        "JSON.parse(sessionStorage.getItem('gridex.session'))"
    )
    return value


def test_member_places_an_order_sees_it_in_the_book_and_a_live_update(
    page: Page, server: DemoServer, shots: Path
) -> None:
    sign_in(page, "carol")
    expect(page.get_by_role("heading", name="Hello Carol")).to_be_visible()
    wallet = page.locator("#wallet")
    expect(wallet).to_contain_text("USD")
    band = httpx.get(
        f"{server.base}{API}/market/regions/campus-north", headers=api_login(server, "carol")
    ).json()
    band_words = f"{float(band['min_price']):.4f} USD/kWh to {float(band['max_price']):.4f} USD/kWh"
    expect(page.locator("#band-note")).to_contain_text(band_words)
    wait_for_chart(page)
    expect(page.locator("#meter")).to_contain_text("DEMO-CAROL-01: produced 0.000 kWh, consumed")

    if _has_route(server, "/notifications") and find_spec("gridex.realtime") is not None:
        # A notification arrives over /ws while the page is open (the list is not polled).
        page.wait_for_function("() => window.gridex.liveState() === 'live'")
        carol = api_login(server, "carol")
        sent = httpx.post(
            f"{server.base}{API}/notifications/test",
            json={"channels": ["in_app", "websocket"]},
            headers=carol,
        )
        assert sent.status_code == 200, sent.text
        note = page.locator("#notifications li", has_text="Test notification")
        expect(note).to_contain_text("this channel reaches you")

    form = page.get_by_role("form", name="Place an order")
    # The epoch after next: its gate is at least one epoch away, whatever the time of day.
    epoch = page.locator("#o-epoch option").nth(1).get_attribute("value")
    assert epoch
    page.locator("#o-epoch").select_option(epoch)

    # A price outside the band is refused, and said in words with the band's figures.
    form.get_by_label("Quantity (kWh)").fill("0.150")
    form.get_by_label("Limit price (per kWh)").fill("5")
    form.get_by_role("button", name="Place order").click()
    expect(page.locator("#orders .error")).to_have_text(
        f"The limit price must be within the region's band, {band_words}."
    )

    form.get_by_label("Limit price (per kWh)").fill("0.1111")
    form.get_by_role("button", name="Place order").click()
    row = page.locator("#orders tbody tr", has_text="0.1111 USD/kWh")
    expect(row).to_contain_text("0.150 kWh")
    expect(row).to_contain_text("open")
    expect(page.locator("#orders .error")).to_be_hidden()

    # Modify: the row becomes a small form; the new price is shown once saved.
    row.get_by_role("button", name=re.compile("^Modify")).click()
    page.get_by_label("New limit price (per kWh)").fill("0.1234")
    page.get_by_role("button", name="Save").click()
    row = page.locator("#orders tbody tr", has_text="0.1234 USD/kWh")
    expect(row).to_contain_text("0.150 kWh")

    # The market page shows it in that epoch's book, marked as mine.
    page.get_by_role("link", name="Market").click()
    expect(page.get_by_role("heading", name="Market", exact=True)).to_be_visible()
    page.locator("#book-epoch").select_option(epoch)
    levels = page.locator("#levels")
    mine = levels.locator("tr", has_text="0.1234 USD/kWh")
    expect(mine).to_contain_text("bid")
    expect(mine.locator("td").last).to_have_text("0.150 kWh")

    # Another member offers in the same epoch: the book updates without a reload.
    alice = api_login(server, "alice")
    placed = httpx.post(
        f"{server.base}{API}/market/orders",
        json={
            "side": "sell",
            "type": "limit",
            "quantity_kwh": "0.050",
            "limit_price": "0.0900",
            "epoch": epoch,
        },
        headers=alice,
    )
    assert placed.status_code == 201, placed.text
    offer = levels.locator("tr", has_text="0.0900 USD/kWh")
    expect(offer).to_contain_text("offer")
    expect(offer).to_contain_text("0.050 kWh")

    # Cancel from home: the order leaves the table and its reservation is released.
    page.get_by_role("link", name="My home").click()
    row = page.locator("#orders tbody tr", has_text="0.1234 USD/kWh")
    row.get_by_role("button", name=re.compile("^Cancel")).click()
    expect(row).to_have_count(0)
    orders = httpx.get(
        f"{server.base}{API}/market/orders",
        params={"epoch": epoch},
        headers=api_login(server, "carol"),
    ).json()["items"]
    assert [(o["limit_price"], o["status"]) for o in orders] == [("0.123400", "cancelled")]


def test_operator_sees_the_region_and_approves_a_withdrawal(
    page: Page, server: DemoServer, shots: Path
) -> None:
    carol = api_login(server, "carol")
    asked = httpx.post(
        f"{server.base}{API}/wallet/withdrawals",
        json={"amount": "1.25", "destination": "IBAN DE00 TEST"},
        headers={**carol, "Idempotency-Key": "web-test-withdrawal"},
    )
    assert asked.status_code in (200, 201), asked.text

    sign_in(page, "operator")
    expect(page).to_have_url(re.compile("#/operator$"))
    expect(page.get_by_role("heading", name="Operator · campus-north")).to_be_visible()
    expect(page.locator("#balance")).to_contain_text("Produced")
    expect(page.locator("#balance")).to_contain_text("kWh")
    expect(page.locator("[data-figure=online] dd")).to_have_text("4 meters")
    expect(page.locator("#op-epochs tbody tr").first).to_be_visible()

    request = page.locator("#withdrawals tr", has_text="1.25 USD")
    expect(request).to_contain_text("IBAN DE00 TEST")
    request.get_by_role("button", name="Approve").click()
    expect(page.locator("#withdrawals")).to_contain_text("No withdrawals wait for approval.")
    mine = httpx.get(f"{server.base}{API}/wallet/withdrawals", headers=carol).json()["items"]
    assert [w["status"] for w in mine] != ["pending"]

    if not _has_route(server, "/alerts"):
        # The alerts module is not in this build: the section is hidden, not broken.
        expect(page.locator("#alerts")).to_be_hidden()
        return
    # Alice's meter sends five readings from the future: each is rejected, and the alerts job
    # raises the meter's `reading_rejected` for the region's operators.
    alice = api_login(server, "alice")
    meter = httpx.get(f"{server.base}{API}/meters", headers=alice).json()["items"][0]
    future = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
    readings = [
        {
            "timestamp": (future + i * timedelta(minutes=15)).isoformat(),
            "energy_consumed_kwh": 0.1,
            "energy_produced_kwh": 0.0,
        }
        for i in range(5)
    ]
    sent = httpx.post(
        f"{server.base}{API}/meters/{meter['id']}/readings",
        json={"readings": readings},
        headers=alice,
    ).json()
    assert len(sent["rejected"]) == 5, sent
    alert = page.locator("#alerts tr", has_text=meter["serial"])
    expect(alert).to_contain_text("reading rejected", timeout=120_000)
    screenshot(page, shots / "operator-alert.png")
    alert.get_by_role("button", name=re.compile("^Acknowledge")).click()
    expect(page.locator("#alerts")).to_contain_text("No open alerts.")
    operator = api_login(server, "operator")
    seen = httpx.get(
        f"{server.base}{API}/alerts",
        params={"type": "reading_rejected", "meter_id": meter["id"]},
        headers=operator,
    ).json()["items"]
    assert [a["status"] for a in seen] == ["acknowledged"]


def _has_route(server: DemoServer, prefix: str) -> bool:
    paths = httpx.get(f"{server.base}/openapi.json").json()["paths"]
    return any(p.startswith(API + prefix) for p in paths)


def test_new_account_with_the_emailed_code(page: Page, server: DemoServer) -> None:
    page.goto("/")
    page.get_by_role("tab", name="New account").click()
    page.get_by_label("Username").fill("frank")
    page.get_by_label("Email").fill("frank@example.org")
    page.get_by_label(re.compile("^Password")).fill("Sunny-Roof-2026")
    page.get_by_label("I am a").select_option("consumer")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_text("We emailed you a 6-digit code.")).to_be_visible()

    admin = api_login(server, "admin")
    mail = httpx.get(
        f"{server.base}{API}/admin/outbox", params={"to": "frank@example.org"}, headers=admin
    ).json()["items"]
    code = re.search(r"\b(\d{6})\b", mail[0]["body"])
    assert code, mail
    page.get_by_label("Code").fill(code.group(1))
    page.get_by_role("button", name="Verify and sign in").click()
    expect(page.get_by_role("heading", name="Hello frank")).to_be_visible()
    expect(page.locator("#meter")).to_contain_text("You have no meter yet")


def test_sign_in_with_a_solana_wallet(page: Page) -> None:
    key = SigningKey.generate()
    address = base58.b58encode(bytes(key.verify_key)).decode()
    # A browser wallet as Phantom injects it; the signing happens in the test, with the key.
    page.expose_function("gridexTestSign", lambda data: list(key.sign(bytes(data)).signature))
    page.add_init_script(
        f"""window.solana = {{
          publicKey: {{ toString: () => "{address}" }},
          connect: async () => ({{ publicKey: {{ toString: () => "{address}" }} }}),
          signMessage: async (bytes) => ({{
            signature: Uint8Array.from(await window.gridexTestSign(Array.from(bytes))),
          }}),
        }};"""
    )
    page.goto("/")
    page.get_by_role("tab", name="Solana wallet").click()
    page.get_by_role("button", name="Sign in with Solana wallet").click()
    expect(page.get_by_role("heading", name=re.compile("^Hello"))).to_be_visible()
    stored = session_storage(page)
    assert stored
    assert stored["user"]["wallet_address"] == address


def test_no_wallet_is_said_in_words(page: Page) -> None:
    page.goto("/")
    page.get_by_role("tab", name="Solana wallet").click()
    expect(page.get_by_text("No Solana wallet was found in this browser.")).to_be_visible()


def test_session_refreshes_and_sign_out_revokes_it(page: Page, server: DemoServer) -> None:
    sign_in(page, "dave")
    expect(page.get_by_role("heading", name="Hello Dave")).to_be_visible()
    before = session_storage(page)
    assert before
    # As if the access token were about to expire: the next call refreshes the pair first.
    page.evaluate(
        "() => { const s = JSON.parse(sessionStorage.getItem('gridex.session'));"
        " s.expires = Date.now(); sessionStorage.setItem('gridex.session', JSON.stringify(s)); }"
    )
    page.reload()
    expect(page.get_by_role("heading", name="Hello Dave")).to_be_visible()
    expect(page.locator("#wallet")).to_contain_text("USD")
    after = session_storage(page)
    assert after
    assert after["refresh"] != before["refresh"]
    assert after["access"] != before["access"]

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to Gridex")).to_be_visible()
    assert session_storage(page) is None
    spent = httpx.post(f"{server.base}{API}/auth/refresh", json={"refresh_token": after["refresh"]})
    assert spent.status_code == 401


def test_phone_width_fits_without_sideways_scrolling(
    browser: Browser, server: DemoServer, shots: Path
) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, base_url=server.base, is_mobile=True
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        sign_in(page, "alice")
        expect(page.get_by_role("heading", name="Hello Alice")).to_be_visible()
        wait_for_chart(page)
        expect(page.locator("#orders")).to_contain_text("Price band")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(page, shots / "member-home-phone.png")
        # Keyboard: on a fresh load the skip link is the first stop.
        page.reload()
        expect(page.get_by_role("heading", name="Hello Alice")).to_be_visible()
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    finally:
        context.close()


def test_a_trading_market_seen_by_a_member_and_the_operator(
    page: Page, server: DemoServer, shots: Path
) -> None:
    """Once epochs have cleared: trades on the member's home, the clearing history and the tape
    on the market page, clearing results for the operator. Saves the screenshots."""
    dave = api_login(server, "dave")
    deadline = time.monotonic() + 180
    cleared: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(cleared) < 2:
        history = httpx.get(f"{server.base}{API}/market/history", headers=dave).json()["items"]
        cleared = [h for h in history if h["price"] is not None]
        time.sleep(2)
    assert cleared, "no epoch cleared with trades"
    price = f"{float(cleared[0]['price']):.4f} USD/kWh"

    sign_in(page, "dave")
    expect(page.get_by_role("heading", name="Hello Dave")).to_be_visible()
    expect(page.locator("#trades tbody tr").first).to_contain_text("buy")
    expect(page.locator("#settlements")).to_contain_text("Today bought")
    wait_for_chart(page)
    screenshot(page, shots / "member-home.png")

    page.get_by_role("link", name="Market").click()
    expect(page.locator("#market-stats")).to_contain_text("Last clearing price")
    expect(page.locator("#history .summary")).to_contain_text("cleared epochs")
    expect(page.locator("#tape tbody tr").first).to_contain_text("USD/kWh")
    expect(page.locator("#tape")).to_contain_text(price)
    wait_for_chart(page)
    screenshot(page, shots / "market.png")

    # A live update: the next clearing shows on the page without a reload (pushed over /ws
    # where the deployment has it, else found by the page's polling).
    state = page.wait_for_function(
        "() => ['live', 'unavailable'].includes(window.gridex.liveState())"
        " && window.gridex.liveState()"
    ).json_value()
    if find_spec("gridex.realtime") is not None:
        assert state == "live"
    summary = page.locator("#history .summary")
    before = summary.inner_text()
    page.evaluate("() => { window.sameDocument = true; }")
    place_crossing_orders(server, epochs=2)
    expect(summary).not_to_have_text(before, timeout=150_000)
    assert page.evaluate("() => window.sameDocument") is True  # updated in place

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, "operator")
    epochs = page.locator("#op-epochs")
    expect(epochs.locator("tr", has_text=price).first).to_contain_text("cleared")
    screenshot(page, shots / "operator.png")
