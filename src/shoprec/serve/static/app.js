// shoprec web page: pick a shopper, see their history and recommendations, send events,
// and a merchant view of new items. Plain DOM, no build step; every call is the public API.
"use strict";

const state = { user: null, tasks: [], previous: new Set(), busy: false };
const $ = (sel) => document.querySelector(sel);
const BEHAVIORS = ["view", "cart", "buy"];
const SOURCE_LABEL = { two_tower: "two-tower", popular: "popular", cooccurrence: "bought together", new: "new item", history: "again", catalog: "catalog" };

// Build an element: el("div", {class: "x"}, "text", child, ...). Text is never parsed as HTML.
function el(tag, attrs = {}, ...children) {
  const svg = ["svg", "rect", "text", "g"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function apiKey() { return $("#api-key").value.trim(); }

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (options.body) headers["Content-Type"] = "application/json";
  if (apiKey()) headers["X-API-Key"] = apiKey();  // writes need it; private reads too
  const res = await fetch(path, { ...options, headers });
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text();
  if (!res.ok) {
    const detail = typeof body === "object" && body.detail ? body.detail : body;
    const err = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    err.status = res.status;
    throw err;
  }
  return body;
}

function say(text, error = false) {
  const m = $("#message");
  m.textContent = text;
  m.classList.toggle("error", error);
}

function titleOf(attrs, item) { return attrs.title || `${item} (${attrs.category || "item"})`; }
function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }
function money(x) { return x === null || x === undefined ? "" : Number(x).toFixed(2); }

// One horizontal bar per task: p(task) on a 0..100% scale, with the value written next to it.
function taskChart(predictions) {
  const tasks = state.tasks.length ? state.tasks : Object.keys(predictions);
  const row = 17, labelW = 44, barW = 170;
  const svg = el("svg", { class: "chart", width: labelW + barW + 48, height: tasks.length * row,
    role: "img", "aria-label": "predicted probability per task" });
  tasks.forEach((t, i) => {
    const p = predictions[t] ?? 0, y = i * row;
    svg.append(
      el("text", { x: 0, y: y + 12 }, t),
      el("rect", { class: "track", x: labelW, y: y + 3, width: barW, height: 11, rx: 2 }),
      el("rect", { x: labelW, y: y + 3, width: Math.max(1, p * barW), height: 11, rx: 2,
        fill: `var(--task-${i % 5})` }),
      el("text", { x: labelW + barW + 5, y: y + 12 }, `${(p * 100).toFixed(1)}%`),
    );
  });
  return svg;
}

function details(exp) {
  if (!exp) return null;
  const sign = (x) => el("td", { class: `num ${x >= 0 ? "pos" : "neg"}` }, (x >= 0 ? "+" : "") + x.toFixed(2));
  const rows = [el("tr", {}, el("td", { colspan: 2 }, el("b", {}, "score terms vs a typical item")))];
  for (const t of exp.tasks) rows.push(el("tr", {}, el("td", {}, t.name), sign(t.contribution)));
  rows.push(el("tr", {}, el("td", { colspan: 2 }, el("b", {}, "input features (integrated gradients)"))));
  for (const f of exp.features.slice(0, 5)) {
    const v = f.value === null || f.value === undefined ? "(none)" : typeof f.value === "number" ? f.value.toFixed(2) : f.value;
    rows.push(el("tr", {}, el("td", {}, `${f.feature} = ${v}`), sign(f.attribution)));
  }
  if (exp.gates) {
    rows.push(el("tr", {}, el("td", { colspan: 2 }, el("b", {}, "expert gate weights"))));
    for (const [task, w] of Object.entries(exp.gates)) {
      rows.push(el("tr", {}, el("td", {}, task), el("td", { class: "num" }, w.map((x) => x.toFixed(2)).join(" "))));
    }
  }
  return el("details", {}, el("summary", {}, "why, in numbers"), el("table", {}, rows));
}

function card(r, fresh) {
  const a = r.attributes;
  const buttons = BEHAVIORS.map((b) =>
    el("button", { type: "button", "data-behavior": b, onclick: () => sendEvent(r.item, b, titleOf(a, r.item)) },
      b[0].toUpperCase() + b.slice(1)));
  return el("article", { class: `card${fresh ? " fresh" : ""}`, "data-item": r.item },
    el("div", { class: "card-head" },
      el("span", { class: "rank" }, r.rank),
      el("h3", {}, titleOf(a, r.item)),
      r.is_new ? el("span", { class: "badge new" }, "new") : null,
      fresh ? el("span", { class: "badge fresh" }, "just in") : null),
    el("p", { class: "meta" }, [a.category, a.brand].filter(Boolean).join(" · "), "  ",
      el("span", { class: "price" }, money(a.price)),
      a.stock === 0 ? " · out of stock" : ""),
    taskChart(r.predictions),
    r.explanation ? el("p", { class: "why" }, r.explanation.sentence) : null,
    details(r.explanation),
    el("div", { class: "sources" }, r.sources.map((s) => el("span", { class: "chip" }, SOURCE_LABEL[s] || s))),
    el("div", { class: "actions" }, buttons));
}

async function loadRecommendations() {
  if (!state.user) return;
  const k = $("#k").value;
  const data = await api(`/recommend/${encodeURIComponent(state.user)}?k=${k}&explain=true`);
  $("#rec-title").textContent = `Recommendations for ${data.user}`;
  const current = new Set(data.items.map((r) => r.item));
  const first = state.previous.size === 0;
  $("#recs").replaceChildren(...data.items.map((r) => card(r, !first && !state.previous.has(r.item))));
  state.previous = current;
  $("#user-status").textContent = data.known_user
    ? `Known shopper · ranked by ${data.fusion}` + (data.live_events ? ` · ${plural(data.live_events, "live event")}` : "")
    : `New shopper (cold start) · ${plural(data.live_events, "live event")}`;
  document.body.dataset.loaded = String(Date.now());
}

async function loadHistory() {
  const data = await api(`/history/${encodeURIComponent(state.user)}?limit=40`);
  const list = $("#history");
  if (!data.events.length) {
    list.replaceChildren(el("li", { class: "muted" }, "Nothing yet: send an event from a card."));
    return;
  }
  list.replaceChildren(...data.events.map((e) =>
    el("li", { "data-item": e.item, "data-source": e.source },
      el("span", { class: `chip ${e.behavior}` }, e.behavior),
      el("span", { class: "title" }, titleOf(e.attributes, e.item)),
      e.source === "session" ? el("span", { class: "chip live" }, "live") : null)));
}

async function selectUser(user) {
  state.user = user;
  state.previous = new Set();
  const sel = $("#user-select");
  if (![...sel.options].some((o) => o.value === user)) sel.append(el("option", { value: user }, user));
  sel.value = user;
  say("");
  try {
    await Promise.all([loadRecommendations(), loadHistory()]);
  } catch (e) {
    say(`Could not load ${user}: ${e.message}`, true);
  }
}

async function sendEvent(item, behavior, title) {
  if (!apiKey()) {
    say("Enter the API key (top right) to send events.", true);
    $("#api-key").focus();
    return;
  }
  try {
    await api("/events", { method: "POST", auth: true, body: JSON.stringify({ user: state.user, item, behavior }) });
    say(`Sent ${behavior} of \u201c${title}\u201d; the list below already uses it.`);
    await Promise.all([loadRecommendations(), loadHistory()]);
  } catch (e) {
    say(e.status === 401 || e.status === 403 ? `Event refused: ${e.message}.` : `Event failed: ${e.message}`, true);
  }
}

async function loadMerchant() {
  const data = await api("/items/new?limit=20&audience=3");
  const max = Math.max(1, ...data.items.map((x) => x.reach));
  const rows = data.items.map((x) =>
    el("tr", { "data-item": x.item },
      el("td", {}, titleOf(x.attributes, x.item), " ", el("span", { class: "muted" }, x.item)),
      el("td", {}, x.attributes.category || ""),
      el("td", { class: "num" }, money(x.attributes.price)),
      el("td", {}, el("div", { class: "reach" },
        el("div", { class: "bar", style: `width:${Math.round((90 * x.reach) / max)}px` }),
        el("span", { class: "reach-count" }, x.reach))),
      el("td", {}, x.audience.map((u) =>
        el("button", { type: "button", class: "user-chip", title: `margin ${u.margin.toFixed(2)} over their candidate cut-off; p(buy) ${((u.predictions.buy ?? 0) * 100).toFixed(1)}%`,
          onclick: () => { show("shopper"); selectUser(u.user); } }, u.user)))));
  $("#new-items tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 5 }, "No new items."))]));
}

function show(view) {
  for (const v of ["shopper", "merchant"]) {
    $(`#view-${v}`).hidden = v !== view;
    $(`#tab-${v}`).classList.toggle("active", v === view);
  }
  if (view === "merchant") loadMerchant().catch((e) => say(e.message, true));
}

async function start() {
  const key = $("#api-key");
  key.value = sessionStorage.getItem("shoprec-key") || "";
  key.addEventListener("change", () => sessionStorage.setItem("shoprec-key", apiKey()));
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => show(t.dataset.view)));
  $("#k").addEventListener("change", () => { state.previous = new Set(); loadRecommendations(); });
  $("#user-select").addEventListener("change", (e) => selectUser(e.target.value));
  $("#new-shopper").addEventListener("click", () => selectUser(`guest-${Math.random().toString(36).slice(2, 8)}`));
  const health = await api("/health");
  state.tasks = health.tasks;
  const model = health.model === health.recipe ? health.model : `${health.recipe} · ${health.model}`;
  $("#model-info").textContent = `${model} · tasks ${health.tasks.join(", ")} · ${health.items} items · score = ${health.fusion}`;
  const { users } = await api("/users?limit=30");
  $("#user-select").replaceChildren(...users.map((u) => el("option", { value: u.user }, `${u.user} (${u.events} events)`)));
  const wanted = new URLSearchParams(location.search).get("user");
  await selectUser(wanted || (users[0] && users[0].user) || "guest");
}

start().catch((e) => say(`The service did not answer: ${e.message}`, true));
