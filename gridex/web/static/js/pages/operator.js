// An operator's view of a region: today's energy balance, meters online/offline, alerts to
// acknowledge, epochs with their clearing results, withdrawals to approve.

import { api, list } from "../api.js";
import { card, dayTime, explain, figures, fill, guard, h, iso, kw, kwh, money, price, table, time, toast } from "../ui.js";
import { regionPicker } from "./market.js";

const SEVERITY = { critical: "critical", warning: "warning", info: "info" };

export async function render(main, ctx) {
  const picker = await regionPicker(ctx, (r) => {
    region = r;
    drawAll();
  });
  let region = picker.region;

  const balance = card("Energy balance today", { id: "balance" });
  const meters = card("Meters", { id: "meters" });
  const alerts = card("Alerts to acknowledge", { id: "alerts", wide: true });
  const epochs = card("Epochs and clearing results", { id: "op-epochs", wide: true });
  const withdrawals = card("Withdrawals to approve", { id: "withdrawals", wide: true });
  alerts.hidden = true;

  fill(
    main,
    h("div", { class: "page-head" }, h("h1", {}, `Operator · ${region ?? "no region"}`), picker.el),
    h("div", { class: "grid" }, balance, meters, alerts, epochs, withdrawals),
  );
  const title = main.querySelector("h1");

  const drawBalance = () =>
    guard(balance, async () => {
      const midnight = new Date();
      midnight.setHours(0, 0, 0, 0);
      const [stats, now] = await Promise.all([
        api(`telemetry/regions/${encodeURIComponent(region)}/stats`, { query: { from: iso(midnight), to: iso(new Date()) } }),
        api(`telemetry/regions/${encodeURIComponent(region)}/realtime`),
      ]);
      const net = stats.net_consumption_kwh;
      fill(
        balance.body,
        figures([
          ["Produced", kwh(stats.total_produced_kwh)],
          ["Consumed", kwh(stats.total_consumed_kwh)],
          [net > 0 ? "Imported from the grid (net)" : "Exported to the grid (net)", kwh(Math.abs(net))],
          ["Peak load", `${kw(stats.peak_load_kw)}${stats.peak_at ? ` at ${time(stats.peak_at)}` : ""}`],
          ["Load now", `${kw(now.consumption_kw)} used, ${kw(now.production_kw)} produced`],
        ]),
        h("p", { class: "muted" }, `Since ${time(stats.period.start)}; latest interval ends ${time(now.interval_end)}.`),
      );
    });

  const drawMeters = () =>
    guard(meters, async () => {
      const items = await list("meters", { region });
      const online = items.filter((m) => m.online);
      const offline = items.filter((m) => !m.online);
      fill(
        meters.body,
        figures([
          ["Online", `${online.length} meters`, { "data-figure": "online" }],
          ["Offline", `${offline.length} meters`, { "data-figure": "offline" }],
        ]),
        table(
          "Offline meters",
          ["Serial", "Status", "Last reading"],
          offline.map((m) => [m.serial, m.status, dayTime(m.last_reading_at)]),
          "Every meter is reporting.",
        ),
      );
    });

  const alertErr = h("p", { class: "error", role: "alert" });
  const drawAlerts = () =>
    guard(alerts, async () => {
      const items = await list("alerts", { region, status: "open" });
      const ack = async (ids) => {
        alertErr.textContent = "";
        try {
          if (ids.length === 1) await api(`alerts/${ids[0]}/acknowledge`, { method: "POST" });
          else await api("alerts/bulk-acknowledge", { method: "POST", body: { ids } });
          toast(ids.length === 1 ? "Alert acknowledged." : `${ids.length} alerts acknowledged.`, "ok");
          await drawAlerts();
        } catch (err) {
          alertErr.textContent = explain(err);
        }
      };
      fill(
        alerts.body,
        alertErr,
        table(
          "Open alerts",
          ["Raised", "Severity", "Type", "What", ""],
          items.map((a) => [
            dayTime(a.raised_at),
            h("span", { class: `sev ${SEVERITY[a.severity] || ""}` }, a.severity),
            a.type.replaceAll("_", " "),
            a.message,
            h(
              "button",
              { type: "button", class: "small", "aria-label": `Acknowledge: ${a.message}`, onclick: () => ack([a.id]) },
              "Acknowledge",
            ),
          ]),
          "No open alerts.",
        ),
        items.length > 1
          ? h("button", { type: "button", class: "small", onclick: () => ack(items.map((a) => a.id)) }, "Acknowledge all")
          : null,
      );
    });

  const epochErr = h("p", { class: "error", role: "alert" });
  const drawEpochs = () =>
    guard(epochs, async () => {
      const from = new Date(Date.now() - 6 * 3600 * 1000);
      const to = new Date(Date.now() + 3600 * 1000);
      const items = await list("market/epochs", { region, from: iso(from), to: iso(to), per_page: 40 });
      items.sort((a, b) => Date.parse(b.start) - Date.parse(a.start));
      const action = (e) => {
        const verb = e.state === "closed" ? "clear" : e.state === "delivered" ? "settle" : null;
        if (!verb) return "";
        return h(
          "button",
          {
            type: "button",
            class: "small",
            onclick: async () => {
              epochErr.textContent = "";
              try {
                await api(`market/epochs/${encodeURIComponent(e.start)}/${verb}`, { method: "POST", query: { region } });
                toast(`Epoch ${time(e.start)}: ${verb === "clear" ? "cleared" : "settled"}.`, "ok");
                await drawEpochs();
              } catch (err) {
                epochErr.textContent = explain(err);
              }
            },
          },
          verb === "clear" ? "Clear now" : "Settle now",
        );
      };
      fill(
        epochs.body,
        epochErr,
        table(
          "Epochs of the last 6 hours and the next hour",
          ["Epoch", "State", "Price", "Volume", "Orders (buy / sell)", "Trades", ""],
          items.map((e) => [
            `${dayTime(e.start)}–${time(e.end)}`,
            e.state,
            e.clearing ? price(e.clearing.price) : "–",
            e.clearing ? kwh(e.clearing.volume_kwh) : "–",
            e.clearing ? `${e.clearing.buy_orders} / ${e.clearing.sell_orders}` : "–",
            e.clearing ? String(e.clearing.trades) : "–",
            action(e),
          ]),
          "No epochs in this window.",
        ),
      );
    });

  const wdErr = h("p", { class: "error", role: "alert" });
  const drawWithdrawals = () =>
    guard(withdrawals, async () => {
      const items = await list("admin/withdrawals", { status: "pending" });
      const decide = async (w, verb) => {
        wdErr.textContent = "";
        try {
          await api(`admin/withdrawals/${w.id}/${verb}`, { method: "POST", idempotent: true });
          toast(`Withdrawal of ${money(w.amount)} ${verb === "approve" ? "approved" : "rejected"}.`, "ok");
          await drawWithdrawals();
        } catch (err) {
          wdErr.textContent = explain(err);
        }
      };
      fill(
        withdrawals.body,
        wdErr,
        table(
          "Pending withdrawals",
          ["Requested", "Amount", "Destination", ""],
          items.map((w) => [
            dayTime(w.requested_at),
            money(w.amount),
            w.destination,
            h(
              "div",
              { class: "actions" },
              h("button", { type: "button", class: "small primary", onclick: () => decide(w, "approve") }, "Approve"),
              h("button", { type: "button", class: "small danger", onclick: () => decide(w, "reject") }, "Reject"),
            ),
          ]),
          "No withdrawals wait for approval.",
        ),
      );
    });

  const drawAll = () => {
    title.textContent = `Operator · ${region ?? "no region"}`;
    return Promise.all([drawBalance(), drawMeters(), drawAlerts(), drawEpochs(), drawWithdrawals()]);
  };
  await drawAll();
  ctx.subscribe("market");
  ctx.on("alert_raised", drawAlerts);
  // Operators hear of their region's alerts as notifications.
  ctx.on("notification", (data) => {
    if (data?.data?.alert_id) drawAlerts();
  });
  ctx.on("device_offline", drawMeters);
  ctx.on("device_online", drawMeters);
  ctx.on("epoch_cleared", drawEpochs);
  ctx.poll(() => Promise.all([drawAlerts(), drawMeters(), drawWithdrawals()]), 15_000);
  ctx.poll(() => Promise.all([drawBalance(), drawEpochs()]), 60_000);
}
