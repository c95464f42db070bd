// The app's shell: session, navigation by URL fragment (#/home, #/market, ...), page life cycle.

import { api, currentSession, isMissingRoute, onSession, setUser, signOut } from "./api.js";
import * as live from "./live.js";
import { fill, h, toast } from "./ui.js";

const STAFF = new Set(["operator", "admin"]);
const PAGES = {
  signin: () => import("./pages/signin.js"),
  home: () => import("./pages/home.js"),
  market: () => import("./pages/market.js"),
  operator: () => import("./pages/operator.js"),
  billing: () => import("./pages/billing.js"),
};

const main = document.getElementById("main");
let cleanup = [];
let rendering = 0;

/** What every page gets: the user, timers and live handlers that end when the page is left. */
function context(user) {
  return {
    user,
    isStaff: STAFF.has(user?.role),
    /** Run `fn` every `ms` while the page is shown (and the tab visible). */
    every(fn, ms) {
      const id = setInterval(() => {
        if (!document.hidden) fn();
      }, ms);
      cleanup.push(() => clearInterval(id));
    },
    /** Refresh with `fn` every `ms` unless live events arrive over /ws (then every `slowMs`). */
    poll(fn, ms, slowMs = ms * 6) {
      let last = 0;
      this.every(() => {
        const wait = live.liveState() === "live" ? slowMs : ms;
        if (Date.now() - last >= wait - 50) {
          last = Date.now();
          fn();
        }
      }, Math.min(ms, 1000));
    },
    on(type, fn) {
      cleanup.push(live.on(type, fn));
    },
    subscribe(channel) {
      live.subscribe(channel);
      cleanup.push(() => live.unsubscribe(channel));
    },
    onLeave(fn) {
      cleanup.push(fn);
    },
  };
}

function routeName() {
  const name = location.hash.replace(/^#\/?/, "").split(/[/?]/)[0];
  return name || "";
}

function defaultRoute(user) {
  return STAFF.has(user?.role) ? "operator" : "home";
}

async function render(event) {
  const ticket = ++rendering;
  // Focus follows navigation (not the first load), unless the reader moved it meanwhile.
  const navigated = event?.type === "hashchange";
  const focusBefore = document.activeElement;
  for (const fn of cleanup.splice(0)) fn();
  const session = currentSession();
  let name = routeName();
  if (!session) {
    name = "signin";
  } else if (!name || name === "signin" || !PAGES[name] || (name === "operator" && !STAFF.has(session.user?.role))) {
    location.replace(`#/${defaultRoute(session.user)}`);
    return;
  }
  updateShell(session, name);
  const page = await PAGES[name]();
  if (ticket !== rendering) return;
  fill(main);
  try {
    await page.render(main, context(session?.user));
  } catch (err) {
    console.error(err);
    fill(main, h("p", { class: "error", role: "alert" }, "This page could not be shown. Try reloading."));
  }
  if (ticket === rendering) {
    const heading = main.querySelector("h1");
    const untouched = document.activeElement === focusBefore || document.activeElement === document.body;
    if (heading && navigated && untouched) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
  }
}

function updateShell(session, name) {
  const nav = document.getElementById("nav");
  const box = document.getElementById("session");
  nav.hidden = !session;
  box.hidden = !session;
  if (!session) return;
  const user = session.user || {};
  document.getElementById("who").textContent = `${user.first_name || user.username || "Wallet user"} · ${user.role || ""}`;
  for (const li of nav.querySelectorAll("[data-needs=operator]")) li.hidden = !STAFF.has(user.role);
  for (const a of nav.querySelectorAll("a[data-route]")) {
    if (a.dataset.route === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

/** The billing and tariffs page is shown in the menu once either module answers. */
async function probeBilling() {
  const item = document.querySelector("[data-needs=billing]");
  for (const path of ["billing/invoices", "tariffs/current"]) {
    try {
      await api(path, { query: path.startsWith("billing") ? { per_page: 1 } : undefined });
      item.hidden = false;
      return;
    } catch (err) {
      if (!isMissingRoute(err)) {
        item.hidden = false;
        return;
      }
    }
  }
  item.hidden = true;
}

async function started(session) {
  try {
    setUser(await api("me"));
  } catch {
    return;
  }
  live.start();
  live.subscribe("user");
  probeBilling();
}

document.getElementById("signout").addEventListener("click", async () => {
  live.stop();
  await signOut();
  toast("You are signed out.");
  location.hash = "#/signin";
});

let wasSignedIn = Boolean(currentSession());
onSession((session) => {
  if (session && !wasSignedIn) started(session);
  if (!session && wasSignedIn) {
    live.stop();
    if (routeName() !== "signin") location.hash = "#/signin";
  }
  wasSignedIn = Boolean(session);
});

live.onLiveState((state) => {
  document.body.dataset.live = state;
});

window.addEventListener("hashchange", render);
if (currentSession()) started(currentSession());
render();

// For the browser tests and the benchmark: whether live events flow (nothing secret).
window.gridex = { liveState: live.liveState };
