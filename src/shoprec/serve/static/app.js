// shoprec web page: pick a shopper, see their history and recommendations, send events,
// and a merchant view: stock and demand (forecast chart, reorder list, products at risk of
// running out) and new items. Plain DOM and inline SVG, no build step, nothing fetched from
// elsewhere; every call is the public API.
"use strict";

const state = { user: null, tasks: [], previous: new Set(), busy: false, forecast: null, chartItem: null };
const $ = (sel) => document.querySelector(sel);
const BEHAVIORS = ["view", "cart", "buy"];
const SOURCE_LABEL = { two_tower: "two-tower", popular: "popular", cooccurrence: "bought together", new: "new item", history: "again", catalog: "catalog" };

// Build an element: el("div", {class: "x"}, "text", child, ...). Text is never parsed as HTML.
function el(tag, attrs = {}, ...children) {
  const svg = ["svg", "rect", "text", "g", "path", "line", "circle", "title"].includes(tag);
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

// ----------------------------------------------------------------- stock and demand

function num(x, digits = 1) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }
function pct(x) { return x === null || x === undefined ? "–" : `${(100 * x).toFixed(0)}%`; }
function itemCell(x) {
  return el("td", {}, el("span", { class: "title" }, x.title || x.item), " ", el("span", { class: "muted" }, x.item));
}

// A line chart of weekly units: the history (solid), the forecast band from P50 to P90
// (shaded) with the P50 line (dashed), and a marker at the forecast's origin. Inline SVG.
function forecastChart(f) {
  const W = 620, H = 240, left = 40, right = 12, top = 12, bottom = 34;
  const hist = f.history, fc = f.forecast;
  const n = hist.length + fc.length;
  const ymax = Math.max(1, ...hist.map((h) => h.units), ...fc.map((p) => p.p90)) * 1.1;
  const x = (i) => left + (n <= 1 ? 0 : (i * (W - left - right)) / (n - 1));
  const y = (v) => top + (H - top - bottom) * (1 - v / ymax);
  const pt = (i, v) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`;
  const line = (pts) => pts.map((p, j) => (j ? "L" : "M") + p).join(" ");
  const svg = el("svg", { class: "forecast-chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H,
    role: "img", "aria-label": `weekly units sold and forecast for ${f.title || f.item}` });
  // y grid: 0, half, max
  for (const v of [0, ymax / 2, ymax / 1.1]) {
    svg.append(el("line", { class: "grid", x1: left, x2: W - right, y1: y(v), y2: y(v) }),
      el("text", { class: "axis", x: left - 6, y: y(v) + 4, "text-anchor": "end" }, num(v, v < 10 ? 1 : 0)));
  }
  const h0 = hist.length;  // forecast points sit after the history
  const last = h0 ? [h0 - 1, hist[h0 - 1].units] : null;  // the band starts at the last actual
  if (fc.length) {
    const upper = fc.map((p, j) => pt(h0 + j, p.p90));
    const lower = fc.map((p, j) => pt(h0 + j, p.p50)).reverse();
    const start = last ? [pt(...last)] : [];
    svg.append(el("path", { class: "band", d: `${line([...start, ...upper, ...lower])} Z` },
      el("title", {}, "forecast P50 to P90")));
    svg.append(el("path", { class: "p50", d: line([...start, ...fc.map((p, j) => pt(h0 + j, p.p50))]) }));
    fc.forEach((p, j) => svg.append(el("circle", { class: "fc-point", cx: x(h0 + j), cy: y(p.p50), r: 2.5 },
      el("title", {}, `${p.week}: P50 ${num(p.p50)}, P90 ${num(p.p90)}, mean ${num(p.mean)}`))));
  }
  if (h0) {
    svg.append(el("path", { class: "history", d: line(hist.map((h, i) => pt(i, h.units))) }));
    svg.append(el("line", { class: "origin", x1: x(h0 - 1), x2: x(h0 - 1), y1: top, y2: H - bottom }));
  }
  const label = (i, text, anchor) => el("text", { class: "axis", x: x(i), y: H - bottom + 16, "text-anchor": anchor }, text);
  if (h0) svg.append(label(0, hist[0].week, "start"), label(h0 - 1, f.origin || hist[h0 - 1].week, "middle"));
  if (fc.length) svg.append(label(n - 1, fc[fc.length - 1].week, "end"));
  svg.append(el("text", { class: "legend", x: left + 4, y: top + 10 },
    "units per week · solid: sold · shaded: forecast P50–P90 · dashed: P50"));
  return svg;
}

function adviceText(f) {
  const r = f.reorder;
  const trend = f.trend ? ` Trend: ${f.trend}.` : "";
  if (!r) return `Stock unknown: no reorder advice.${trend}`;
  const order = r.reorder_qty > 0 ? `Order ${num(r.reorder_qty, 0)} now.` : "No order needed.";
  return `Stock ${num(r.stock, 0)} · demand over the ${num(r.lead_time_weeks, 1)}-week lead time ` +
    `P50 ${num(r.demand_p50_lead)}, P90 ${num(r.demand_p90_lead)} · ` +
    `${pct(r.p_stockout)} chance of selling out · ${num(r.weeks_of_cover)} weeks of cover. ${order}${trend}`;
}

async function loadForecast(item) {
  const f = await api(`/forecast/${encodeURIComponent(item)}`);
  state.chartItem = item;
  $("#forecast-title").textContent = `Forecast: ${f.title || f.item}`;
  $("#forecast-chart").replaceChildren(forecastChart(f));
  $("#forecast-chart").dataset.item = item;
  $("#forecast-advice").textContent = adviceText(f);
  document.querySelectorAll(".inv-table tr.selected").forEach((r) => r.classList.remove("selected"));
  document.querySelectorAll(`.inv-table tr[data-item="${CSS.escape(item)}"]`).forEach((r) => r.classList.add("selected"));
}

function inventoryRow(x, cells) {
  return el("tr", { "data-item": x.item, class: x.at_risk ? "risk" : null, tabindex: 0,
    onclick: () => loadForecast(x.item).catch((e) => say(e.message, true)) }, itemCell(x), cells);
}

async function loadInventory() {
  const status = $("#inventory-status");
  if (!state.forecast) {
    status.textContent = "No demand forecast is loaded. Run `shoprec forecast CONFIG --out <artifact>/forecast` (or set serve.forecast) and reload to see forecasts, the reorder list and the products at risk of running out.";
    $("#inventory-body").hidden = true;
    return;
  }
  const data = await api("/inventory/reorder?limit=50");
  status.textContent = `Forecast from the week of ${data.origin || "?"} (${data.model || "forecaster"}) · ` +
    `${plural(data.items, "product")} with stock and a forecast · ${data.to_order} to reorder · ` +
    `${data.at_risk_count} at risk · service level ${pct(data.service_level)}`;
  $("#inventory-body").hidden = false;
  const risk = data.at_risk.map((x) => inventoryRow(x, [
    el("td", { class: "num" }, num(x.stock, 0)),
    el("td", { class: "num" }, `${num(x.demand_p50_lead)} / ${num(x.demand_p90_lead)}`),
    el("td", { class: "num" }, pct(x.p_stockout)),
    el("td", { class: "num" }, num(x.weeks_of_cover))]));
  $("#at-risk tbody").replaceChildren(...(risk.length ? risk : [el("tr", {}, el("td", { colspan: 5 }, "No product is at risk."))]));
  const order = data.reorder.map((x) => inventoryRow(x, [
    el("td", { class: "num" }, num(x.stock, 0)),
    el("td", { class: "num" }, num(x.lead_time_weeks)),
    el("td", { class: "num" }, `${num(x.demand_p50_lead)} / ${num(x.demand_p90_lead)}`),
    el("td", { class: "num" }, pct(x.p_stockout)),
    el("td", { class: "num order" }, num(x.reorder_qty, 0))]));
  $("#reorder tbody").replaceChildren(...(order.length ? order : [el("tr", {}, el("td", { colspan: 6 }, "Nothing to reorder."))]));
  const first = state.chartItem || (data.at_risk[0] || data.reorder[0] || {}).item;
  if (first) await loadForecast(first);
  document.body.dataset.inventory = String(Date.now());
}

function show(view) {
  for (const v of ["shopper", "merchant"]) {
    $(`#view-${v}`).hidden = v !== view;
    $(`#tab-${v}`).classList.toggle("active", v === view);
  }
  if (view === "merchant") {
    loadInventory().catch((e) => { $("#inventory-status").textContent = `Could not load the forecast: ${e.message}`; });
    loadMerchant().catch((e) => say(e.message, true));
  }
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
  state.forecast = health.forecast || null;
  const model = health.model === health.recipe ? health.model : `${health.recipe} · ${health.model}`;
  $("#model-info").textContent = `${model} · tasks ${health.tasks.join(", ")} · ${health.items} items · score = ${health.fusion}`;
  const { users } = await api("/users?limit=30");
  $("#user-select").replaceChildren(...users.map((u) => el("option", { value: u.user }, `${u.user} (${u.events} events)`)));
  const wanted = new URLSearchParams(location.search).get("user");
  await selectUser(wanted || (users[0] && users[0].user) || "guest");
}

start().catch((e) => say(`The service did not answer: ${e.message}`, true));
