// Live events over the API's WebSocket `/ws`: authenticate with the first message (the token never
// goes into a URL), subscribe to channels, reconnect with backoff. Where the deployment has no
// `/ws` the pages keep themselves fresh by polling instead (see `poll` in main.js).

import { accessToken, renewTokens } from "./api.js";

const CLOSE_AUTH = 4401; // the server's close code for missing, bad or revoked credentials

const handlers = new Map(); // type -> Set(fn)
const channels = new Set();
let socket = null;
let wanted = false;
let everOpen = false;
let failures = 0;
let timer = 0;
let state = "off"; // off | connecting | live | unavailable
const stateListeners = new Set();

function setState(next) {
  state = next;
  for (const fn of stateListeners) fn(state);
}

export function liveState() {
  return state;
}

export function onLiveState(fn) {
  stateListeners.add(fn);
  fn(state);
}

/** Call `fn(data, message)` for every server message of `type` ("*" for all). */
export function on(type, fn) {
  if (!handlers.has(type)) handlers.set(type, new Set());
  handlers.get(type).add(fn);
  return () => handlers.get(type).delete(fn);
}

export function subscribe(channel) {
  if (channels.has(channel)) return;
  channels.add(channel);
  if (socket?.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ op: "subscribe", channel }));
}

export function unsubscribe(channel) {
  if (!channels.delete(channel)) return;
  if (socket?.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ op: "unsubscribe", channel }));
}

function dispatch(message) {
  for (const key of [message.type, "*"]) {
    for (const fn of handlers.get(key) || []) {
      try {
        fn(message.data ?? {}, message);
      } catch (err) {
        console.error(err);
      }
    }
  }
}

async function connect() {
  if (!wanted) return;
  const token = await accessToken().catch(() => null);
  if (!token) return;
  setState("connecting");
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  let ws;
  try {
    ws = new WebSocket(url);
  } catch {
    return retry();
  }
  socket = ws;
  // The token goes in the first message, not the URL (URLs end up in logs).
  ws.addEventListener("open", () => ws.send(JSON.stringify({ op: "auth", token })));
  ws.addEventListener("message", (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return; // not JSON: nothing the app understands
    }
    if (message.type === "welcome") {
      // Signed in: now the channels the pages asked for.
      for (const channel of channels) ws.send(JSON.stringify({ op: "subscribe", channel }));
      everOpen = true;
      failures = 0;
      setState("live");
    }
    dispatch(message);
  });
  ws.addEventListener("close", (event) => {
    if (socket === ws) socket = null;
    // Refused credentials (expired, or the session was revoked): a fresh pair before trying
    // again; if that fails too the session is over and the app returns to sign-in.
    if (event.code === CLOSE_AUTH && wanted) {
      renewTokens().then(retry, () => stop());
      return;
    }
    retry();
  });
}

function retry() {
  if (!wanted) return;
  failures += 1;
  // Never opened: this deployment has no /ws (or it refuses us); look again now and then.
  if (!everOpen && failures >= 2) setState("unavailable");
  else setState("connecting");
  const delay = everOpen ? Math.min(30_000, 1000 * 2 ** Math.min(failures, 5)) : failures < 2 ? 2000 : 60_000;
  clearTimeout(timer);
  timer = setTimeout(connect, delay);
}

export function start() {
  if (wanted) return;
  wanted = true;
  failures = 0;
  connect();
}

export function stop() {
  wanted = false;
  clearTimeout(timer);
  channels.clear();
  socket?.close();
  socket = null;
  everOpen = false;
  setState("off");
}
