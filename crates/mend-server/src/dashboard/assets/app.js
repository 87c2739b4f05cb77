// mend dashboard: the only script on its pages (served from /assets, so the
// Content-Security-Policy can forbid inline scripts). It does three things:
// shows times in the viewer's zone, refreshes live figures, and selects all rows for a
// bulk action. Everything works without it (actions are plain forms, confirmed server-side).
"use strict";

const REFRESH_MS = 5000;

function localTimes(root) {
  const fmt = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
  for (const el of root.querySelectorAll("time[datetime]")) {
    const d = new Date(el.getAttribute("datetime"));
    if (!isNaN(d)) el.textContent = fmt.format(d);
  }
}

// Live regions: elements with data-live and an id are replaced by the same
// element of a fresh copy of the page. Forms and focus outside them are untouched.
let timer = null;
async function refresh() {
  const regions = document.querySelectorAll("[data-live][id]");
  if (regions.length === 0) return;
  try {
    const resp = await fetch(location.href, { headers: { "x-mend-refresh": "1" }, credentials: "same-origin" });
    if (!resp.ok) return;
    const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
    for (const el of regions) {
      const fresh = doc.getElementById(el.id);
      if (fresh && !el.contains(document.activeElement)) {
        el.replaceWith(fresh);
        localTimes(fresh);
      }
    }
    document.documentElement.dataset.refreshed = String(Date.now());
  } catch (_) {
    // The server may be restarting; the next tick tries again.
  }
}

function schedule() {
  clearInterval(timer);
  timer = null;
  if (!document.hidden) timer = setInterval(refresh, REFRESH_MS);
  document.documentElement.dataset.live = timer ? "on" : "paused";
}

document.addEventListener("visibilitychange", () => {
  schedule();
  if (!document.hidden) refresh();
});

// Select all / none for bulk actions.
document.addEventListener("change", (ev) => {
  const t = ev.target;
  if (t instanceof HTMLInputElement && t.dataset.selectAll !== undefined) {
    for (const box of document.querySelectorAll('input[name="id"]')) box.checked = t.checked;
  }
});

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  schedule();
});
