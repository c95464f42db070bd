// A member's home: epochs with the gate countdown, my meter's last 24 h, wallet, orders (place,
// modify, cancel), trades, settlements and notifications as they arrive.

import { api, isMissingRoute, list } from "../api.js";
import { chartBox, meterChart } from "../charts.js";
import {
  card,
  countdown,
  dayTime,
  explain,
  figures,
  fill,
  guard,
  h,
  iso,
  kwh,
  money,
  price,
  setCurrency,
  span,
  table,
  time,
  toast,
} from "../ui.js";
import { notificationsCard } from "./notifications.js";

const STATE_WORDS = {
  open: "open for orders",
  closed: "gate closed, clearing",
  cleared: "cleared",
  delivered: "delivered",
  settled: "settled",
};

export async function render(main, ctx) {
  const region = ctx.user?.region;
  const epochs = card("Market epochs", { id: "epochs" });
  const wallet = card("Wallet", { id: "wallet" });
  const meter = card("My meter, last 24 hours", { id: "meter", wide: true });
  const orders = card("My orders", { id: "orders", wide: true });
  const trades = card("My recent trades", { id: "trades", wide: true });
  const settlements = card("Per epoch: sold, bought, settled", { id: "settlements", wide: true });
  const notes = notificationsCard(ctx);

  fill(
    main,
    h("h1", {}, `Hello ${ctx.user?.first_name || ctx.user?.username || ""}`.trim()),
    region ? null : h("p", { class: "banner warn" }, "Your account has no region yet: ask your operator to add you to one to trade."),
    h("div", { class: "grid" }, epochs, wallet, notes.card, meter, orders, trades, settlements),
  );

  let current = null;
  let band = null;

  // ---- epochs and countdown
  const gateLeft = h("span", { class: "countdown", "aria-live": "off" }, "–");
  const drawEpochs = () =>
    guard(epochs, async () => {
      current = await api("market/epochs/current", { query: { region } });
      const open = current.open;
      const delivering = current.delivering;
      fill(
        epochs.body,
        figures([
          ["Next epoch", open ? `${span(open)} · ${STATE_WORDS[open.state] || open.state}` : "none"],
          ["Gate closes in", open ? h("span", {}, gateLeft, ` (at ${time(open.gate_closure)})`) : "–"],
          [
            "Delivering now",
            delivering ? `${span(delivering)} · ${STATE_WORDS[delivering.state] || delivering.state}` : "none",
          ],
          [
            "Last clearing",
            !delivering?.clearing
              ? "not yet"
              : delivering.clearing.price
                ? `${price(delivering.clearing.price)} · ${kwh(delivering.clearing.volume_kwh)}`
                : "no trades (bids and offers did not cross)",
          ],
        ]),
      );
      tick();
      fillEpochChoices();
    });
  const tick = () => {
    if (!current?.open) return;
    gateLeft.textContent = countdown(current.open.gate_closure);
    if (Date.parse(current.open.gate_closure) <= Date.now()) {
      current.open = null;
      setTimeout(drawEpochs, 1500);
    }
  };
  ctx.every(tick, 1000);

  // ---- wallet
  const drawWallet = () =>
    guard(wallet, async () => {
      const w = await api("wallet");
      setCurrency(w.currency);
      fill(
        wallet.body,
        figures([
          ["Available", money(w.available), { "data-figure": "available" }],
          ["Reserved by orders", money(w.reserved), { "data-figure": "reserved" }],
          ["In escrow", money(w.escrow_pending)],
          ["Energy tokens", kwh(w.energy_tokens_kwh)],
        ]),
      );
    });

  // ---- meter chart
  let chart = null;
  let meters = [];
  let meterId = null;
  const chartHolder = chartBox("Production and consumption of my meter over the last 24 hours, kWh per 15 minutes");
  const meterSummary = h("p", { class: "summary" });
  const drawMeter = () =>
    guard(meter, async () => {
      if (!meters.length) {
        // Staff see every meter of the region in the API; here only their own.
        meters = await list("meters", { owner_id: ctx.user?.id });
        meterId = meters[0]?.id ?? null;
        if (!meterId) {
          fill(meter.body, h("p", { class: "muted" }, "You have no meter yet. An operator registers it for you."));
          return;
        }
        const picker =
          meters.length > 1
            ? h(
                "div",
                { class: "field inline" },
                h("label", { for: "meter-pick" }, "Meter"),
                h(
                  "select",
                  {
                    id: "meter-pick",
                    onchange: (e) => {
                      meterId = e.target.value;
                      chart?.destroy();
                      chart = null;
                      drawMeter();
                    },
                  },
                  meters.map((m) => h("option", { value: m.id }, `${m.serial} (${m.kind})`)),
                ),
              )
            : null;
        fill(meter.body, picker, chartHolder, meterSummary);
      }
      const to = new Date();
      const from = new Date(to.getTime() - 24 * 3600 * 1000);
      const series = await api(`meters/${meterId}/readings`, {
        query: { from: iso(from), to: iso(to), interval: "15m" },
      });
      const points = series.points;
      const produced = points.reduce((s, p) => s + p.produced_kwh, 0);
      const consumed = points.reduce((s, p) => s + p.consumed_kwh, 0);
      const m = meters.find((x) => x.id === meterId);
      meterSummary.textContent = `${m.serial}: produced ${kwh(produced)}, consumed ${kwh(consumed)} in the last 24 h${
        m.online === false ? " · offline" : ""
      }.`;
      chartHolder.setAttribute(
        "aria-label",
        `Chart: production and consumption of ${m.serial}, kWh per 15 minutes, last 24 hours. Produced ${kwh(produced)}, consumed ${kwh(consumed)}.`,
      );
      if (chart) chart.update([points.map((p) => Date.parse(p.start) / 1000), points.map((p) => p.produced_kwh), points.map((p) => p.consumed_kwh)]);
      else chart = meterChart(chartHolder, points);
    });
  ctx.onLeave(() => chart?.destroy());

  // ---- orders
  const orderErr = h("p", { class: "error", role: "alert" });
  const bandNote = h("p", { class: "muted", id: "band-note" }, "Price band: loading…");
  const epochSelect = h("select", { id: "o-epoch", name: "epoch" });
  const priceInput = h("input", {
    id: "o-price",
    name: "limit_price",
    inputmode: "decimal",
    required: true,
    "aria-describedby": "band-note",
    autocomplete: "off",
  });
  const typeSelect = h(
    "select",
    {
      id: "o-type",
      name: "type",
      onchange: () => {
        const market = typeSelect.value === "market";
        priceInput.disabled = market;
        priceInput.required = !market;
      },
    },
    h("option", { value: "limit" }, "Limit"),
    h("option", { value: "market" }, "Market (any price in the band)"),
  );
  const form = h(
    "form",
    { class: "order-form", "aria-label": "Place an order" },
    h(
      "fieldset",
      { class: "sides" },
      h("legend", {}, "Side"),
      h("label", {}, h("input", { type: "radio", name: "side", value: "buy", checked: true }), " Buy"),
      h("label", {}, h("input", { type: "radio", name: "side", value: "sell" }), " Sell"),
    ),
    h("div", { class: "field" }, h("label", { for: "o-type" }, "Type"), typeSelect),
    h(
      "div",
      { class: "field" },
      h("label", { for: "o-qty" }, "Quantity (kWh)"),
      h("input", { id: "o-qty", name: "quantity_kwh", inputmode: "decimal", required: true, autocomplete: "off" }),
    ),
    h("div", { class: "field" }, h("label", { for: "o-price" }, "Limit price (per kWh)"), priceInput),
    h("div", { class: "field" }, h("label", { for: "o-epoch" }, "Epoch"), epochSelect),
    h("button", { type: "submit", class: "primary" }, "Place order"),
  );
  const orderTable = h("div", { class: "orders-table" });
  fill(orders.body, bandNote, form, orderErr, orderTable);

  function fillEpochChoices() {
    if (!current?.open) return;
    const chosen = epochSelect.value;
    const start = Date.parse(current.open.start);
    const length = Date.parse(current.open.end) - start;
    const options = [];
    for (let i = 0; i < 4; i++) {
      const s = new Date(start + i * length);
      const e = new Date(start + (i + 1) * length);
      options.push(h("option", { value: iso(s) }, `${time(s)}–${time(e)}${i === 0 ? " (next)" : ""}`));
    }
    fill(epochSelect, options);
    if ([...epochSelect.options].some((o) => o.value === chosen)) epochSelect.value = chosen;
  }

  const drawBand = async () => {
    if (!region) return;
    try {
      band = await api(`market/regions/${encodeURIComponent(region)}`);
      bandNote.textContent = `Price band in ${region}: ${price(band.min_price)} to ${price(band.max_price)} · fee ${(band.fee_bps / 100).toFixed(2)} % · ${band.mechanism}`;
      priceInput.placeholder = `${Number(band.min_price).toFixed(2)} – ${Number(band.max_price).toFixed(2)}`;
    } catch (err) {
      bandNote.textContent = explain(err);
    }
  };

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    orderErr.textContent = "";
    const data = new FormData(form);
    const body = {
      side: data.get("side"),
      type: data.get("type"),
      quantity_kwh: String(data.get("quantity_kwh")).trim(),
      epoch: data.get("epoch") || undefined,
    };
    if (body.type === "limit") body.limit_price = String(data.get("limit_price")).trim();
    form.setAttribute("aria-busy", "true");
    try {
      const order = await api("market/orders", { method: "POST", body, idempotent: true });
      toast(`Order placed: ${order.side} ${kwh(order.quantity_kwh)} for ${time(order.epoch)}.`, "ok");
      form.reset();
      typeSelect.dispatchEvent(new Event("change"));
      await Promise.all([drawOrders(true), drawWallet()]);
    } catch (err) {
      orderErr.textContent = explain(err);
    } finally {
      form.removeAttribute("aria-busy");
    }
  });

  // Orders being modified, with what has been typed so far: a live refresh of the table keeps it.
  const editing = new Map();
  const orderRow = (o) => {
    const actions = h("div", { class: "actions" });
    const cells = [
      time(o.epoch),
      h("span", { class: `side ${o.side}` }, o.side),
      kwh(o.quantity_kwh),
      kwh(o.filled_kwh),
      o.type === "market" ? "market" : price(o.limit_price),
      money(o.reserved),
      o.status.replace("_", " "),
      actions,
    ];
    if (o.status === "open") {
      actions.append(
        h(
          "button",
          {
            type: "button",
            class: "small",
            "aria-label": `Modify ${o.side} order of ${kwh(o.quantity_kwh)} for ${time(o.epoch)}`,
            onclick: () => {
              editing.set(o.id, { quantity: String(o.quantity_kwh), price: o.limit_price ?? "" });
              drawOrders(true);
            },
          },
          "Modify",
        ),
        h(
          "button",
          {
            type: "button",
            class: "small danger",
            "aria-label": `Cancel ${o.side} order of ${kwh(o.quantity_kwh)} for ${time(o.epoch)}`,
            onclick: async () => {
              orderErr.textContent = "";
              try {
                await api(`market/orders/${o.id}`, { method: "DELETE" });
                toast("Order cancelled; its reservation is released.", "ok");
                await Promise.all([drawOrders(true), drawWallet()]);
              } catch (err) {
                orderErr.textContent = explain(err);
              }
            },
          },
          "Cancel",
        ),
      );
    }
    const draft = editing.get(o.id);
    if (draft && o.status !== "open") editing.delete(o.id); // filled or gone meanwhile
    else if (draft) {
      const q = h("input", {
        value: draft.quantity,
        inputmode: "decimal",
        "aria-label": "New quantity (kWh)",
        size: 7,
        oninput: (e) => (draft.quantity = e.target.value),
      });
      const p = h("input", {
        value: draft.price,
        inputmode: "decimal",
        "aria-label": "New limit price (per kWh)",
        size: 8,
        disabled: o.type === "market",
        oninput: (e) => (draft.price = e.target.value),
      });
      cells[2] = q;
      cells[4] = p;
      fill(
        actions,
        h(
          "button",
          {
            type: "button",
            class: "small primary",
            onclick: async () => {
              orderErr.textContent = "";
              const patch = { quantity_kwh: draft.quantity.trim() };
              if (o.type === "limit") patch.limit_price = draft.price.trim();
              try {
                await api(`market/orders/${o.id}`, { method: "PATCH", body: patch });
                editing.delete(o.id);
                toast("Order modified (it now queues behind orders placed before the change).", "ok");
                await Promise.all([drawOrders(true), drawWallet()]);
              } catch (err) {
                orderErr.textContent = explain(err);
              }
            },
          },
          "Save",
        ),
        h(
          "button",
          {
            type: "button",
            class: "small",
            onclick: () => {
              editing.delete(o.id);
              drawOrders(true);
            },
          },
          "Keep",
        ),
      );
    }
    return cells;
  };

  // Live refreshes leave the table alone while an order is being modified (the fields keep their
  // focus); the member's own actions redraw it at once.
  const drawOrders = (force = false) =>
    editing.size && force !== true
      ? Promise.resolve(true)
      : guard(orders, async () => {
      const items = await list("market/orders", { per_page: 50 });
      const now = Date.now();
      const active = items.filter(
        (o) => ["open", "partially_filled"].includes(o.status) && Date.parse(o.epoch) + 3600_000 > now,
      );
      fill(
        orderTable,
        table(
          "My open orders",
          ["Epoch", "Side", "Quantity", "Filled", "Limit", "Reserved", "Status", ""],
          active.map(orderRow),
          "No open orders. Place one above.",
        ),
      );
    });

  // ---- trades
  const drawTrades = () =>
    guard(trades, async () => {
      const items = await list("market/trades", { per_page: 10 });
      fill(
        trades.body,
        table(
          "My recent trades",
          ["Epoch", "Side", "Quantity", "Price", "Value", "Fee", "Settlement"],
          items.map((t) => [
            dayTime(t.epoch),
            h("span", { class: `side ${t.side}` }, t.side),
            kwh(t.quantity_kwh),
            price(t.price),
            money(t.value),
            money(t.fee),
            t.settlement_status,
          ]),
          "No trades yet: they appear when an epoch clears with your orders in it.",
        ),
      );
    });

  // ---- settlements (per epoch and today in total)
  const isToday = (epoch) => new Date(epoch).toDateString() === new Date().toDateString();
  const settledView = (items) => {
    const todays = items.filter((x) => isToday(x.epoch));
    const sum = (key) => todays.reduce((acc, x) => acc + Number(x[key] || 0), 0);
    return [
      figures([
        ["Today sold", kwh(sum("sold_kwh"))],
        ["Today bought", kwh(sum("bought_kwh"))],
        ["Today delivered", kwh(sum("delivered_kwh"))],
        ["Today net", money(sum("net"))],
      ]),
      table(
        "Settlements per epoch",
        ["Epoch", "Sold", "Bought", "Delivered", "Net"],
        items.map((x) => [dayTime(x.epoch), kwh(x.sold_kwh), kwh(x.bought_kwh), kwh(x.delivered_kwh), money(x.net)]),
        "No settled epochs yet.",
      ),
    ];
  };
  // Where the deployment has no settlement list, the same view from my trades: per epoch what
  // I sold (earned: value less fee) and bought (paid), and whether it is settled yet.
  const tradesView = (trades) => {
    const byEpoch = new Map();
    for (const t of trades) {
      const row = byEpoch.get(t.epoch) ?? { epoch: t.epoch, sold: 0, bought: 0, earned: 0, paid: 0, status: new Set() };
      if (t.side === "sell") {
        row.sold += t.quantity_kwh;
        row.earned += Number(t.value) - Number(t.fee);
      } else {
        row.bought += t.quantity_kwh;
        row.paid += Number(t.value);
      }
      row.status.add(t.settlement_status);
      byEpoch.set(t.epoch, row);
    }
    const rows = [...byEpoch.values()];
    const todays = rows.filter((r) => isToday(r.epoch));
    const sum = (key) => todays.reduce((acc, r) => acc + r[key], 0);
    return [
      figures([
        ["Today sold", kwh(sum("sold"))],
        ["Today bought", kwh(sum("bought"))],
        ["Today earned", money(sum("earned"))],
        ["Today paid", money(sum("paid"))],
      ]),
      table(
        "My trades per epoch",
        ["Epoch", "Sold", "Bought", "Earned", "Paid", "Settlement"],
        rows.map((r) => [dayTime(r.epoch), kwh(r.sold), kwh(r.bought), money(r.earned), money(r.paid), [...r.status].join(", ")]),
        "Nothing traded yet.",
      ),
    ];
  };
  const drawSettlements = () =>
    guard(settlements, async () => {
      try {
        fill(settlements.body, ...settledView(await list("market/settlements", { per_page: 20 })));
      } catch (err) {
        if (!isMissingRoute(err)) throw err;
        fill(settlements.body, ...tradesView(await list("market/trades", { per_page: 100 })));
      }
    });

  await Promise.all([drawEpochs(), drawWallet(), drawMeter(), drawBand()]);
  await Promise.all([drawOrders(), drawTrades(), drawSettlements(), notes.load()]);

  // ---- live: events over /ws when the deployment has it, else polling
  const refreshMoney = () => Promise.all([drawWallet(), drawOrders(), drawTrades()]);
  for (const type of ["order_placed", "order_updated", "trade_executed", "epoch_cleared"]) ctx.on(type, refreshMoney);
  ctx.on("wallet_updated", drawWallet);
  ctx.on("settlement_completed", () => Promise.all([drawWallet(), drawTrades(), drawSettlements()]));
  ctx.on("epoch_cleared", drawEpochs);
  ctx.on("reading_received", (d) => {
    if (!d.meter_id || d.meter_id === meterId) drawMeter();
  });
  if (meterId) ctx.subscribe(`meter:${meterId}`);
  ctx.poll(() => Promise.all([drawEpochs(), refreshMoney()]), 15_000);
  ctx.poll(drawSettlements, 60_000);
  ctx.poll(drawMeter, 60_000, 300_000);
}
