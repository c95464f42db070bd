// The market: next epoch's order book as a depth chart, the last cleared epochs, the public tape.

import { api } from "../api.js";
import { chartBox, depthChart, depthData, historyChart, historyData } from "../charts.js";
import { card, dayTime, figures, fill, guard, h, iso, kwh, price, setCurrency, table, time } from "../ui.js";

export async function regionPicker(ctx, onChange) {
  let regions = [];
  try {
    regions = await api("market/regions");
  } catch {
    regions = [];
  }
  const names = regions.map((r) => r.region);
  let region = ctx.user?.region && names.includes(ctx.user.region) ? ctx.user.region : names[0] ?? ctx.user?.region;
  const remembered = sessionStorage.getItem("gridex.region");
  if (ctx.isStaff && remembered && names.includes(remembered)) region = remembered;
  const select = h(
    "select",
    {
      id: "region-pick",
      onchange: (e) => {
        sessionStorage.setItem("gridex.region", e.target.value);
        onChange(e.target.value);
      },
    },
    names.map((n) => h("option", { value: n, selected: n === region }, n)),
  );
  const el = h("div", { class: "field inline" }, h("label", { for: "region-pick" }, "Region"), select);
  return { el: names.length > 1 ? el : null, region };
}

export async function render(main, ctx) {
  const picker = await regionPicker(ctx, (r) => {
    region = r;
    depth?.destroy();
    hist?.destroy();
    depth = hist = null;
    drawAll();
  });
  let region = picker.region;

  const stats = card("Market summary", { id: "market-stats", wide: true });
  const book = card("Order book of the next epoch", { id: "book", wide: true });
  const history = card("Cleared epochs, last 24 hours", { id: "history", wide: true });
  const tape = card("Public tape", { id: "tape" });
  const levels = card("Book levels", { id: "levels" });

  fill(main, h("div", { class: "page-head" }, h("h1", {}, "Market"), picker.el), h("div", { class: "grid" }, stats, book, history, levels, tape));

  const depthBox = chartBox("Depth chart of the next epoch's order book", "depth");
  const bookNote = h("p", { class: "summary" });
  const bookEpochSelect = h("select", { id: "book-epoch", onchange: () => drawBook() });
  fill(
    book.body,
    h("div", { class: "field inline" }, h("label", { for: "book-epoch" }, "Epoch"), bookEpochSelect),
    bookNote,
    depthBox,
  );
  let nextGate = null;
  // The next open epoch and the three after it (orders may be placed ahead).
  const drawEpochChoices = async () => {
    const current = await api("market/epochs/current", { query: { region } });
    if (!current.open) return;
    nextGate = current.open.gate_closure;
    const chosen = bookEpochSelect.value;
    const start = Date.parse(current.open.start);
    const length = Date.parse(current.open.end) - start;
    fill(
      bookEpochSelect,
      [0, 1, 2, 3].map((i) => {
        const s = new Date(start + i * length);
        return h("option", { value: iso(s) }, `${time(s)}–${time(new Date(start + (i + 1) * length))}${i ? "" : " (next)"}`);
      }),
    );
    if ([...bookEpochSelect.options].some((o) => o.value === chosen)) bookEpochSelect.value = chosen;
  };
  const histBox = chartBox("Clearing price and volume of the cleared epochs", "history");
  const histNote = h("p", { class: "summary" });
  fill(history.body, histNote, histBox);
  let depth = null;
  let hist = null;
  let bookEpoch = null;
  ctx.onLeave(() => {
    depth?.destroy();
    hist?.destroy();
  });

  const drawStats = () =>
    guard(stats, async () => {
      const d = await api("market/data", { query: { region } });
      setCurrency(d.currency);
      const oi = d.open_interest;
      fill(
        stats.body,
        figures([
          ["Last clearing price", d.last_price ? `${price(d.last_price)} (${time(d.last_epoch)})` : "none yet"],
          ["Average price, 24 h", price(d.vwap_24h)],
          ["Volume, 24 h", `${kwh(d.volume_24h_kwh)} in ${d.trades_24h} trades`],
          ["Next epoch: bids", `${kwh(oi.buy_kwh)} (${oi.buy_orders} orders)`],
          ["Next epoch: offers", `${kwh(oi.sell_kwh)} (${oi.sell_orders} orders)`],
        ]),
      );
    });

  const drawBook = () =>
    guard(book, async () => {
      const b = await api("market/orderbook", { query: { region, epoch: bookEpochSelect.value || undefined } });
      const epoch = b.epoch;
      if (bookEpoch !== epoch && bookEpoch) ctx.subscribe(`epoch:${epoch}`);
      bookEpoch = epoch;
      const bidKwh = b.bids.reduce((s, l) => s + l.quantity_kwh, 0);
      const askKwh = b.asks.reduce((s, l) => s + l.quantity_kwh, 0);
      bookNote.textContent = `Epoch ${time(epoch)} (${b.mechanism}, ${b.state}): bids ${kwh(bidKwh)}, offers ${kwh(askKwh)}.`;
      depthBox.setAttribute("aria-label", `Depth chart for the epoch at ${time(epoch)}: bids ${kwh(bidKwh)}, offers ${kwh(askKwh)}. The levels are listed in the table "Book levels".`);
      if (depth) depth.update(depthData(b));
      else depth = depthChart(depthBox, b);
      const rows = [
        ...b.asks
          .slice()
          .sort((x, y) => Number(y.price) - Number(x.price))
          .map((l) => [h("span", { class: "side sell" }, "offer"), price(l.price), kwh(l.quantity_kwh), String(l.orders), l.own_orders ? kwh(l.own_quantity_kwh) : ""]),
        ...b.bids.map((l) => [h("span", { class: "side buy" }, "bid"), price(l.price), kwh(l.quantity_kwh), String(l.orders), l.own_orders ? kwh(l.own_quantity_kwh) : ""]),
      ];
      fill(levels.body, table("Order book levels", ["Side", "Price", "Quantity", "Orders", "Mine"], rows, "The book is empty."));
    });

  const drawHistory = () =>
    guard(history, async () => {
      // Up to an hour ahead: an epoch clears at its gate, before its delivery ends.
      const to = new Date(Date.now() + 3600 * 1000);
      const from = new Date(Date.now() - 24 * 3600 * 1000);
      const page = await api("market/history", { query: { region, from: iso(from), to: iso(to), per_page: 100 } });
      const items = page.items.filter((r) => r.price !== null || r.volume_kwh > 0);
      const last = items.length ? items.reduce((a, b) => (Date.parse(a.epoch) > Date.parse(b.epoch) ? a : b)) : null;
      histNote.textContent = last
        ? `${items.length} cleared ${items.length === 1 ? "epoch" : "epochs"}; the last, ${time(last.epoch)}: ${price(last.price)}, ${kwh(last.volume_kwh)}.`
        : "No epoch has cleared with trades in the last 24 hours yet.";
      if (hist) hist.update(historyData(items));
      else hist = historyChart(histBox, items);
    });

  const drawTape = () =>
    guard(tape, async () => {
      const trades = await api("market/trades/recent", { query: { region, limit: 15 } });
      fill(
        tape.body,
        table(
          "Recent public trades",
          ["Epoch", "Quantity", "Price"],
          trades.map((t) => [dayTime(t.epoch), kwh(t.quantity_kwh), price(t.price)]),
          "No trades yet.",
        ),
      );
    });

  const drawAll = async () => {
    await drawEpochChoices().catch(() => null);
    await Promise.all([drawStats(), drawBook(), drawHistory(), drawTape()]);
  };
  await drawAll();
  ctx.subscribe("market");
  if (bookEpoch) ctx.subscribe(`epoch:${bookEpoch}`);
  const onBook = () => Promise.all([drawBook(), drawStats()]);
  ctx.on("order_placed", onBook);
  ctx.on("order_updated", onBook);
  ctx.on("epoch_cleared", drawAll);
  // When the next epoch's gate closes, the choices move on by one.
  ctx.every(() => {
    if (nextGate && Date.parse(nextGate) < Date.now()) {
      nextGate = null;
      drawEpochChoices().then(drawBook);
    }
  }, 2_000);
  ctx.on("trade_executed", drawTape);
  // Other members' orders are private events (their own user channel): the public book is polled.
  ctx.poll(onBook, 5_000, 5_000);
  ctx.poll(() => Promise.all([drawHistory(), drawTape()]), 30_000);
}
