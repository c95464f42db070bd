// DOM helpers, number formats with units, and API errors explained in words.
// Text always goes in through textContent (never innerHTML), so data cannot become markup.

import { ApiError, isMissingRoute } from "./api.js";

/** h("p", {class: "x"}, "text", child) -> element. Attributes starting with "on" are listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let currency = "USD";
export function setCurrency(code) {
  if (code) currency = code;
}
export function cur() {
  return currency;
}

const num = (v) => (typeof v === "number" ? v : Number.parseFloat(v));

/** Money from the API's decimal string: "59.97 USD"; amounts under one unit keep up to four
 * decimals, so a small trade's 0.0018 USD does not read as nothing. */
export function money(value) {
  if (value === null || value === undefined) return "–";
  const n = num(value);
  const digits = n !== 0 && Math.abs(n) < 1 ? 4 : 2;
  return `${n.toLocaleString("en", { minimumFractionDigits: digits, maximumFractionDigits: digits })} ${currency}`;
}

/** A price per kWh: "0.1218 USD/kWh". */
export function price(value) {
  if (value === null || value === undefined) return "–";
  return `${num(value).toFixed(4)} ${currency}/kWh`;
}

/** Energy in kWh with the API's precision (Wh): "0.223 kWh". */
export function kwh(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  return `${num(value).toLocaleString("en", { minimumFractionDigits: digits, maximumFractionDigits: digits })} kWh`;
}

export function kw(value) {
  if (value === null || value === undefined) return "–";
  return `${num(value).toFixed(2)} kW`;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const dayTimeFmt = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});

export function time(iso) {
  return iso ? timeFmt.format(new Date(iso)) : "–";
}

export function dayTime(iso) {
  return iso ? dayTimeFmt.format(new Date(iso)) : "–";
}

/** "20:15–20:30" for an epoch. */
export function span(epoch) {
  return `${time(epoch.start)}–${time(epoch.end)}`;
}

/** "04:59" (or "1:04:59") until `iso`; "now" once passed. */
export function countdown(iso) {
  const left = Math.max(0, Math.floor((new Date(iso) - Date.now()) / 1000));
  if (left === 0) return "0:00";
  const hours = Math.floor(left / 3600);
  const mins = Math.floor((left % 3600) / 60);
  const secs = String(left % 60).padStart(2, "0");
  return hours ? `${hours}:${String(mins).padStart(2, "0")}:${secs}` : `${mins}:${secs}`;
}

/** An ISO timestamp for the API (UTC with Z). */
export function iso(date) {
  return new Date(date).toISOString().replace(/\.\d{3}Z$/, "Z");
}

const WORDS = {
  INVALID_CREDENTIALS: () => "The username, email or password is not right.",
  ACCOUNT_LOCKED: () => "Too many failed sign-ins: the account is locked for a while. Try again later.",
  ACCOUNT_SUSPENDED: () => "This account is suspended; ask your operator.",
  EMAIL_NOT_VERIFIED: () => "Your email address is not verified yet: enter the code we emailed you.",
  AUTHENTICATION_REQUIRED: () => "Please sign in again.",
  INVALID_TOKEN: () => "Your session has ended; please sign in again.",
  FORBIDDEN: () => "Your role may not do this.",
  NOT_FOUND: () => "It no longer exists (or is not yours).",
  RATE_LIMIT_EXCEEDED: (d) => `Too many requests; wait ${d.retry_after ?? "a few"} seconds and try again.`,
  INSUFFICIENT_FUNDS: (d) =>
    d.required
      ? `Not enough money available: this needs ${money(d.required)} and ${money(d.balance)} is available.`
      : "Not enough money available in your wallet.",
  OUTSTANDING_DEBT: () => "Your wallet has a debt to repay before new buy orders or withdrawals.",
  GATE_CLOSED: (d) =>
    `This epoch no longer takes orders: its gate closed${d.gate_closure ? ` at ${time(d.gate_closure)}` : ""}. Choose a later epoch.`,
  PRICE_OUT_OF_BOUNDS: (d) =>
    `The limit price must be within the region's band, ${price(d.min_price)} to ${price(d.max_price)}.`,
  NO_ELIGIBLE_METER: (d) =>
    d.side === "sell"
      ? "To sell you need an active meter in this region that can export energy."
      : "To buy you need an active meter in this region that can import energy.",
  SELF_TRADE: () => "This order would trade with one of your own open orders.",
  EXCEEDS_CAPACITY: () => "You cannot sell more than your meters can export in one epoch.",
  IDEMPOTENCY_IN_PROGRESS: () => "The same request is still being processed; wait a moment.",
  CONFLICT: (_, m) => m,
  UNKNOWN_REGION: () => "That region does not exist.",
  INVALID_SIGNATURE: () => "The wallet's signature could not be verified.",
  SERVICE_UNAVAILABLE: () => "The service is briefly unavailable; try again in a moment.",
  INTERNAL_ERROR: () => "Something went wrong on our side; try again.",
};

const FIELD = {
  quantity_kwh: "Quantity",
  limit_price: "Limit price",
  password: "Password",
  email: "Email",
  username: "Username",
  otp: "Code",
  epoch: "Epoch",
};

/** An error in words a member understands, with the request id for support. */
export function explain(err) {
  if (!(err instanceof ApiError)) return "The server could not be reached; check your connection.";
  if (err.code === "VALIDATION_ERROR") {
    const fields = err.details?.fields || [];
    if (err.details?.password) return `Password needs ${[].concat(err.details.password).join(", ")}.`;
    if (fields.length) {
      return fields
        .map((f) => {
          const name = FIELD[f.field?.split(".").pop()] || f.field || "Input";
          return `${name}: ${f.message}`;
        })
        .join(" ");
    }
    return err.message;
  }
  const words = WORDS[err.code];
  return words ? words(err.details || {}, err.message) : err.message;
}

/** A short message in the polite live region, visible for a few seconds (over the page, so
 * nothing moves when it comes or goes). */
export function toast(text, kind = "info") {
  const box = document.getElementById("toasts");
  const item = h("p", { class: `toast ${kind}` }, text);
  box.append(item);
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => item.remove(), 5000);
}

/**
 * A card: heading + body. `load(body)` fills it; a 404 of the route hides the card (the module
 * is not part of this deployment); other errors are shown in words inside the card.
 */
export function card(title, { id, wide, cls } = {}) {
  const headingId = `${id || title.replace(/\W+/g, "-").toLowerCase()}-h`;
  const body = h("div", { class: "card-body" });
  const el = h(
    "section",
    { class: `card${wide ? " wide" : ""}${cls ? ` ${cls}` : ""}`, id, "aria-labelledby": headingId },
    h("h2", { id: headingId }, title),
    body,
  );
  el.body = body;
  return el;
}

/** Run a card's loader: hide on a missing route, explain other failures. Returns true on success. */
export async function guard(cardEl, fn) {
  try {
    await fn();
    cardEl.hidden = false;
    return true;
  } catch (err) {
    if (isMissingRoute(err)) {
      cardEl.hidden = true;
      return false;
    }
    fill(cardEl.body, h("p", { class: "error", role: "alert" }, explain(err)));
    return false;
  }
}

/** A table with a caption, header cells and rows; `empty` is shown when there are no rows. */
export function table(caption, headers, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h(
    "div",
    { class: "scroll", tabindex: "0", role: "region", "aria-label": caption },
    h(
      "table",
      {},
      h("caption", { class: "sr-only" }, caption),
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))),
    ),
  );
}

/** Label/value pairs as a description list (figures in tabular digits). */
export function figures(pairs) {
  return h(
    "dl",
    { class: "figures" },
    pairs.map(([label, value, attrs]) => h("div", attrs || {}, h("dt", {}, label), h("dd", {}, value))),
  );
}
