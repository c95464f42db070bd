// Charts on the vendored uPlot (static/vendor/uplot, MIT). Each chart sits in a box whose height
// the stylesheet reserves, so drawing or updating never moves the page; width follows the box.

import { cur, h, time } from "./ui.js";

export const COLORS = {
  produced: "#b45309",
  consumed: "#1d4ed8",
  bid: "#15803d",
  ask: "#b91c1c",
  price: "#6d28d9",
  volume: "#0f766e",
};

const LEGEND_PX = 34;
let firstDrawn = false;
function markFirstDraw() {
  if (!firstDrawn) {
    firstDrawn = true;
    performance.mark("gridex:first-chart");
  }
}

const axisFont = "12px system-ui, sans-serif";
const axis = (label, extra = {}) => ({
  label: label || undefined, // no label, no space kept for one
  font: axisFont,
  labelFont: axisFont,
  stroke: "#374151",
  grid: { stroke: "#e5e7eb", width: 1 },
  ticks: { stroke: "#d1d5db", width: 1 },
  ...extra,
});

/** Time ticks in the reader's 24-hour clock, with the date where a day begins. */
const timeTicks = (_, ticks) =>
  ticks.map((t) => {
    const d = new Date(t * 1000);
    return d.getHours() === 0 && d.getMinutes() === 0
      ? d.toLocaleDateString(undefined, { month: "short", day: "numeric" })
      : time(d);
  });

/** A chart box: `role=img` with a summary for screen readers, and the uPlot instance inside. */
class Chart {
  constructor(box, opts, data) {
    this.box = box;
    this.opts = opts;
    this.plot = new window.uPlot({ ...opts, ...this.size(), hooks: { draw: [markFirstDraw] } }, data, box);
    this.resize = new ResizeObserver(() => {
      const size = this.size();
      if (size.width !== this.plot.width) this.plot.setSize(size);
    });
    this.resize.observe(box);
  }

  /** The plot fills the reserved box, leaving room for the legend below it. */
  size() {
    const width = Math.max(240, this.box.clientWidth || 600);
    return { width, height: Math.max(120, (this.box.clientHeight || 260) - LEGEND_PX) };
  }

  update(data) {
    this.plot.setData(data);
  }

  destroy() {
    this.resize.disconnect();
    this.plot.destroy();
  }
}

/** A chart container element with a reserved height and an accessible name. */
export function chartBox(label, cls = "") {
  return h("div", { class: `chart ${cls}`, role: "img", "aria-label": label });
}

function seriesOf(label, color, extra = {}) {
  return { label, stroke: color, width: 2, points: { show: false }, ...extra };
}

/** Production and consumption per interval (kWh) over time. */
export function meterChart(box, points) {
  const data = [
    points.map((p) => Date.parse(p.start) / 1000),
    points.map((p) => p.produced_kwh),
    points.map((p) => p.consumed_kwh),
  ];
  const opts = {
    legend: { live: false },
    scales: { x: { time: true }, y: { range: (_, lo, hi) => [0, Math.max(hi * 1.1, 0.05)] } },
    axes: [axis("", { values: timeTicks }), axis("kWh per interval", { size: 60 })],
    series: [
      {},
      seriesOf("Produced (kWh)", COLORS.produced, { fill: "rgba(180,83,9,0.12)" }),
      seriesOf("Consumed (kWh)", COLORS.consumed),
    ],
  };
  return new Chart(box, opts, data);
}

/** Cumulative depth of an order book: bids (from the best price down) and asks (up). */
export function depthData(book) {
  const prices = [...new Set([...book.bids, ...book.asks].map((l) => Number(l.price)))].sort((a, b) => a - b);
  const bidAt = new Map(book.bids.map((l) => [Number(l.price), l.quantity_kwh]));
  const askAt = new Map(book.asks.map((l) => [Number(l.price), l.quantity_kwh]));
  const bestBid = book.bids.length ? Math.max(...bidAt.keys()) : -Infinity;
  const bestAsk = book.asks.length ? Math.min(...askAt.keys()) : Infinity;
  const bids = prices.map(() => null);
  const asks = prices.map(() => null);
  let acc = 0;
  for (let i = prices.length - 1; i >= 0; i--) {
    acc += bidAt.get(prices[i]) || 0;
    if (prices[i] <= bestBid) bids[i] = Math.round(acc * 1000) / 1000;
  }
  acc = 0;
  for (let i = 0; i < prices.length; i++) {
    acc += askAt.get(prices[i]) || 0;
    if (prices[i] >= bestAsk) asks[i] = Math.round(acc * 1000) / 1000;
  }
  if (!prices.length) return [[], [], []];
  // Edges a little beyond the outermost levels, so each side's steps are drawn in full.
  const pad = Math.max((prices[prices.length - 1] - prices[0]) * 0.1, prices[0] * 0.05, 0.001);
  const round = (v) => Math.round(v * 1e6) / 1e6;
  return [
    [round(prices[0] - pad), ...prices, round(prices[prices.length - 1] + pad)],
    [book.bids.length ? bids[0] : null, ...bids, null],
    [null, ...asks, book.asks.length ? asks[asks.length - 1] : null],
  ];
}

export function depthChart(box, book) {
  const stepped = window.uPlot.paths.stepped;
  const opts = {
    legend: { live: false },
    scales: { x: { time: false }, y: { range: (_, lo, hi) => [0, Math.max((hi || 0) * 1.1, 0.1)] } },
    axes: [
      axis(`Price (${cur()}/kWh)`, { values: (_, ticks) => ticks.map((t) => t.toFixed(3)) }),
      axis("Cumulative kWh", { size: 60 }),
    ],
    series: [
      { label: "Price" },
      seriesOf("Bids, cumulative (kWh)", COLORS.bid, {
        paths: stepped({ align: 1 }),
        fill: "rgba(21,128,61,0.15)",
      }),
      seriesOf("Asks, cumulative (kWh)", COLORS.ask, {
        paths: stepped({ align: -1 }),
        fill: "rgba(185,28,28,0.12)",
      }),
    ],
  };
  return new Chart(box, opts, depthData(book));
}

/** Clearing price (line, left axis) and volume (bars, right axis) per cleared epoch. */
export function historyData(items) {
  const rows = [...items].sort((a, b) => Date.parse(a.epoch ?? a.start) - Date.parse(b.epoch ?? b.start));
  return [
    rows.map((r) => Date.parse(r.epoch ?? r.start) / 1000),
    rows.map((r) => (r.price === null || r.price === undefined ? null : Number(r.price))),
    rows.map((r) => r.volume_kwh ?? 0),
  ];
}

export function historyChart(box, items) {
  const bars = window.uPlot.paths.bars({ size: [0.6, 24] });
  const opts = {
    legend: { live: false },
    scales: {
      // The window the rows cover (at least the last two hours), not the span of the rows
      // alone: a single cleared epoch would otherwise stretch over years.
      x: {
        time: true,
        range: (u) => {
          const xs = u.data[0];
          const now = Date.now() / 1000;
          const from = Math.min(xs.length ? xs[0] - 900 : now, now - 2 * 3600);
          return [from, Math.max(now, xs.length ? xs[xs.length - 1] + 900 : now)];
        },
      },
      price: { range: (_, lo, hi) => [Math.max(0, (lo ?? 0) * 0.9), (hi ?? 0.2) * 1.1 || 0.2] },
      kwh: { range: (_, lo, hi) => [0, Math.max((hi || 0) * 1.2, 0.1)] },
    },
    axes: [
      axis("", { values: timeTicks }),
      axis(`Price (${cur()}/kWh)`, { scale: "price", size: 64, values: (_, t) => t.map((v) => v.toFixed(3)) }),
      axis("Volume (kWh)", { scale: "kwh", side: 1, size: 56, grid: { show: false } }),
    ],
    series: [
      {},
      seriesOf(`Clearing price (${cur()}/kWh)`, COLORS.price, { scale: "price", spanGaps: true, points: { show: true, size: 5 } }),
      { label: "Volume (kWh)", scale: "kwh", stroke: COLORS.volume, fill: "rgba(15,118,110,0.35)", paths: bars, points: { show: false } },
    ],
  };
  return new Chart(box, opts, historyData(items));
}
