// Notifications: the stored history, then each new one as it arrives over /ws.

import { api, list } from "../api.js";
import { card, dayTime, explain, fill, guard, h, toast } from "../ui.js";

const SHOWN = 8;

export function notificationsCard(ctx) {
  const el = card("Notifications", { id: "notifications" });
  el.hidden = true; // until the module answers
  const count = h("span", { class: "badge", "aria-label": "unread" });
  el.querySelector("h2").append(" ", count);
  const items = h("ul", { class: "notes", "aria-live": "polite", "aria-relevant": "additions" });
  const err = h("p", { class: "error", role: "alert" });
  let notes = [];

  const unread = () => notes.filter((n) => !n.read_at).length;
  const draw = () => {
    count.textContent = unread() ? String(unread()) : "";
    fill(
      items,
      notes.length
        ? notes.slice(0, SHOWN).map((n) =>
            h(
              "li",
              { class: n.read_at ? "read" : "unread" },
              h("p", { class: "note-title" }, n.title),
              n.body ? h("p", { class: "note-body" }, n.body) : null,
              h(
                "p",
                { class: "note-meta" },
                h("time", { datetime: n.created_at }, dayTime(n.created_at)),
                n.read_at || !n.id // a live-only notification (not stored) has nothing to mark
                  ? null
                  : h(
                      "button",
                      {
                        type: "button",
                        class: "link",
                        onclick: async () => {
                          try {
                            await api(`notifications/${n.id}/read`, { method: "POST" });
                            n.read_at = new Date().toISOString();
                            draw();
                          } catch (e) {
                            err.textContent = explain(e);
                          }
                        },
                      },
                      "Mark read",
                    ),
              ),
            ),
          )
        : h("li", { class: "muted" }, "No notifications."),
    );
  };

  const readAll = h(
    "button",
    {
      type: "button",
      class: "small",
      onclick: async () => {
        try {
          await api("notifications/read-all", { method: "POST" });
          const now = new Date().toISOString();
          for (const n of notes) n.read_at ||= now;
          draw();
        } catch (e) {
          err.textContent = explain(e);
        }
      },
    },
    "Mark all read",
  );
  fill(el.body, items, err, readAll);

  const load = () =>
    guard(el, async () => {
      notes = await list("notifications", { per_page: SHOWN });
      draw();
    });

  ctx.on("notification", (data) => {
    if (!data || (data.id && notes.some((n) => n.id === data.id))) return;
    notes.unshift({ ...data, read_at: data.read_at ?? null, created_at: data.created_at ?? new Date().toISOString() });
    el.hidden = false;
    draw();
    toast(data.title || "New notification");
  });

  return { card: el, load };
}
