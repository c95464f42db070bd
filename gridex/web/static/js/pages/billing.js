// Bills and tariffs: my invoices with their PDFs, and the tariff in force in my region.
// Each section shows only when the deployment has the module (its route answers).

import { api, list } from "../api.js";
import { card, dayTime, explain, figures, fill, guard, h, money, price, table, toast } from "../ui.js";

const STATUS = { issued: "to pay", paid: "paid", overdue: "overdue", disputed: "disputed", void: "void" };

export async function render(main, ctx) {
  const tariff = card("Tariff in force", { id: "tariff" });
  const forecast = card("Prices for the next hours", { id: "forecast", wide: true });
  const invoices = card("My invoices", { id: "invoices", wide: true });
  for (const c of [tariff, forecast, invoices]) c.hidden = true;
  const none = h("p", { class: "muted", hidden: true }, "Bills and tariffs are not offered by this deployment yet.");
  fill(main, h("h1", {}, "Bills and tariffs"), none, h("div", { class: "grid" }, tariff, forecast, invoices));

  const drawTariff = () =>
    guard(tariff, async () => {
      const t = await api("tariffs/current", { query: ctx.user?.region ? { region: ctx.user.region } : undefined });
      fill(
        tariff.body,
        figures([
          ["Region", `${t.region} (${t.timezone})`],
          ["Grid import price", price(t.import_price)],
          ["Feed-in price", price(t.export_price)],
          ["Band now", t.band ? `${t.band.name || "time-of-use"}, ${t.band.start}–${t.band.end}` : "standard"],
        ]),
        t.override_id ? h("p", { class: "banner warn" }, "A temporary price override is in force.") : null,
      );
    });

  const drawForecast = () =>
    guard(forecast, async () => {
      const f = await api("tariffs/forecast", { query: ctx.user?.region ? { region: ctx.user.region } : undefined });
      fill(
        forecast.body,
        table(
          "Price forecast per epoch",
          ["Epoch", "Import", "Feed-in", "Expected market"],
          f.points
            .slice(0, 12)
            .map((p) => [dayTime(p.epoch), price(p.import_price), price(p.export_price), price(p.expected_clearing_price)]),
          "No forecast.",
        ),
      );
    });

  const err = h("p", { class: "error", role: "alert" });
  const download = async (inv) => {
    err.textContent = "";
    try {
      const blob = await api(`billing/invoices/${inv.id}/pdf`, { blob: true });
      const url = URL.createObjectURL(blob);
      const a = h("a", { href: url, download: `${inv.number || inv.id}.pdf` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (ex) {
      err.textContent = explain(ex);
    }
  };
  const pay = async (inv) => {
    err.textContent = "";
    try {
      await api(`billing/invoices/${inv.id}/pay`, { method: "POST", idempotent: true });
      toast(`Invoice ${inv.number} paid from your wallet.`, "ok");
      await drawInvoices();
    } catch (ex) {
      err.textContent = explain(ex);
    }
  };
  const drawInvoices = () =>
    guard(invoices, async () => {
      const items = await list("billing/invoices", { per_page: 24 });
      fill(
        invoices.body,
        err,
        table(
          "Invoices",
          ["Number", "Period", "Status", "Due", "Total", ""],
          items.map((inv) => [
            inv.number,
            inv.period,
            STATUS[inv.status] || inv.status,
            dayTime(inv.due_date),
            money(inv.total),
            h(
              "div",
              { class: "actions" },
              h("button", { type: "button", class: "small", onclick: () => download(inv), "aria-label": `Download invoice ${inv.number} as PDF` }, "PDF"),
              ["issued", "overdue"].includes(inv.status)
                ? h("button", { type: "button", class: "small primary", onclick: () => pay(inv), "aria-label": `Pay invoice ${inv.number} from the wallet` }, "Pay")
                : null,
            ),
          ]),
          "No invoices yet: the first comes after your first month.",
        ),
      );
    });

  const shown = await Promise.all([drawTariff(), drawForecast(), drawInvoices()]);
  none.hidden = shown.some(Boolean) || !tariff.hidden || !invoices.hidden;
}
