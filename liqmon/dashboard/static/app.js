// liqmon ops dashboard: plain JavaScript, no build step, no dependency.
//
// The dashboard process sends one snapshot (the whole book, recent alerts, health, ladders)
// when the page connects, then coalesced deltas. The page keeps a mirror of the book, sorts it
// worst first, renders only the lines in view (a small book is rendered whole), and renders at
// most every RENDER_INTERVAL_MS however fast updates come. Every text from the broker goes in
// through textContent, never as HTML.
"use strict";

const ROW_HEIGHT = 24;
const FULL_RENDER_MAX = 2000; // lines: a small book is rendered whole (the browser's find works)
const OVERSCAN = 12;
const RENDER_INTERVAL_MS = 250;
const FEED_SHOWN = 300;
const RESULT_ROWS = 200;
const NEAR_PCT = 2;
const ROW_FIELDS = ["id", "account", "scope", "asset", "symbol", "side", "level", "ratio", "mb", "mm", "liquidating", "positions"];
const R = Object.fromEntries(ROW_FIELDS.map((name, i) => [name, i]));
const POSITION_FIELDS = ["symbol", "side", "qty", "mark", "liq", "bkr", "mark_ts", "stale", "notional"];
const P = Object.fromEntries(POSITION_FIELDS.map((name, i) => [name, i]));
const COLUMNS = ["band", "account", "scope", "what", "ratio", "mb", "mm", "pos", "mark", "liq", "bkr", "dist", "stale"];

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "data") Object.assign(node.dataset, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
};

// -- numbers and times ------------------------------------------------------------------------
const nf2 = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const nfPrice = new Intl.NumberFormat("en-US", { maximumFractionDigits: 10 });
const nfInt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const nfQty = new Intl.NumberFormat("en-US", { maximumFractionDigits: 6 });
const dash = "—";
function money(x) {
  if (x === null || x === undefined) return dash;
  const m = Math.abs(x);
  if (m >= 1e9) return (x / 1e9).toFixed(2) + "B";
  if (m >= 1e7) return (x / 1e6).toFixed(2) + "M";
  if (m >= 0.01 || m === 0) return nf2.format(x);
  return x.toPrecision(4);
}
function price(x) {
  if (x === null || x === undefined) return dash;
  return nfPrice.format(Number(x.toPrecision(6)));
}
function ratio(r) { return r === null || r === undefined ? "MB≤0" : r.toFixed(4); }
function pct(x, digits = 2) { return (x > 0 ? "+" : x < 0 ? "−" : "") + Math.abs(x).toFixed(digits) + "%"; }
function pad(n) { return String(n).padStart(2, "0"); }
function utc(ts, withDate) {
  if (ts === null || ts === undefined) return dash;
  const d = new Date(ts);
  const time = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  return withDate ? `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${time}` : time;
}
function shortTime(ts) {
  if (ts === null || ts === undefined) return dash;
  const d = new Date(ts), now = new Date();
  const sameDay = d.getUTCFullYear() === now.getUTCFullYear() && d.getUTCMonth() === now.getUTCMonth() && d.getUTCDate() === now.getUTCDate();
  return sameDay ? utc(ts, false) : `${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${utc(ts, false)}`;
}
function age(ms) {
  if (ms === null || ms === undefined || !isFinite(ms)) return dash;
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  if (s < 3600) return (s / 60).toFixed(0) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return nfInt.format(s / 86400) + " d";
}
function bandOfLevel(level) { return level === null || level === undefined ? "lv-0" : level >= 0.9 ? "lv-3" : level >= 0.8 ? "lv-2" : "lv-1"; }
function entityLabel(o) {
  return o.scope === "isolated" ? `${o.symbol} ${o.side} isolated` : `cross ${o.asset}`;
}
// names on the wire are indexes into these (the dashboard sends each name with its index)
const names = { symbols: [], assets: [], sides: ["both", "long", "short"] };
const symbolOf = (i) => (i < 0 ? null : names.symbols[i] ?? "?");
const assetOf = (i) => names.assets[i] ?? "?";
const sideOf = (i) => (i < 0 ? null : names.sides[i] ?? "?");
function learnNames(given) {
  if (!given) return;
  for (const [i, name] of given.symbols || []) names.symbols[i] = name;
  for (const [i, name] of given.assets || []) names.assets[i] = name;
}

// -- the mirror -------------------------------------------------------------------------------
const state = {
  rows: new Map(), // id -> entry
  alerts: [],
  alertIds: new Set(),
  instances: [],
  symbols: new Map(),
  ladders: new Map(),
  broker: {},
  connected: false,
  snapshots: 0,
  snapshotMore: 0,
  renders: 0,
  dirty: { book: true, feed: true, health: true, ladder: true, symbols: true },
  lineEntries: [],
  linePositions: [],
  filter: { account: "", symbol: "", warned: false },
  whatif: { next: 1, pending: null },
};
window.liqmonStats = { loadedAt: performance.now(), snapshots: 0, renders: 0 };

function entryOf(a) {
  const liquidating = a[R.liquidating] === 1;
  const r = a[R.ratio];
  return { a, sv: liquidating ? 3e9 : r === null ? 2e9 : r, band: liquidating ? "lv-liq" : bandOfLevel(a[R.level]) };
}

// worst first: the sort value (as the dashboard computes it), then the id
const worse = (x, y) => (y.sv - x.sv) || (x.a[R.id] - y.a[R.id]);

// The book in order, kept sorted: a render after a few changes moves only those entries
// (binary search), a render after many sorts again.
const order = { list: [], changed: new Set(), full: true };

function noteChanged(id) {
  if (!order.full) order.changed.add(id);
}

function settleOrder() {
  if (order.full || order.changed.size > 2000 + state.rows.size / 20) {
    order.list = Array.from(state.rows.values()).sort(worse);
  } else if (order.changed.size) {
    const changed = order.changed;
    const kept = order.list.filter((e) => !changed.has(e.a[R.id]));
    for (const id of changed) {
      const e = state.rows.get(id);
      if (!e) continue;
      let lo = 0, hi = kept.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (worse(kept[mid], e) <= 0) lo = mid + 1;
        else hi = mid;
      }
      kept.splice(lo, 0, e);
    }
    order.list = kept;
  }
  order.full = false;
  order.changed = new Set();
}

function applySnapshot(m) {
  const t0 = performance.now();
  if (JSON.stringify(m.meta.rows) !== JSON.stringify(ROW_FIELDS) || JSON.stringify(m.meta.positions) !== JSON.stringify(POSITION_FIELDS)) {
    console.error("liqmon dashboard: the server speaks another row format; reload the page", m.meta);
  }
  names.symbols = [];
  names.assets = [];
  names.sides = m.meta.sides;
  learnNames(m.names);
  state.rows = new Map();
  for (const a of m.rows) state.rows.set(a[R.id], entryOf(a));
  order.full = true;
  state.alerts = [];
  state.alertIds = new Set();
  addAlerts(m.alerts || []);
  state.instances = m.instances || [];
  state.symbols = new Map((m.symbols || []).map((s) => [s.symbol, s]));
  state.ladders = new Map(Object.entries(m.ladders || {}));
  state.broker = m.broker || {};
  state.snapshots += 1;
  Object.keys(state.dirty).forEach((k) => { state.dirty[k] = true; });
  window.liqmonStats.snapshots = state.snapshots;
  window.liqmonStats.lastSnapshot = { rows: m.rows.length, applyMs: performance.now() - t0 };
}

function addAlerts(items) {
  for (const item of items) {
    if (state.alertIds.has(item.id)) continue; // a snapshot and the next delta may overlap
    state.alertIds.add(item.id);
    state.alerts.push(item);
  }
  if (state.alerts.length > 5000) {
    const dropped = state.alerts.splice(0, state.alerts.length - 5000);
    for (const item of dropped) state.alertIds.delete(item.id);
  }
  state.dirty.feed = true;
}

function applyDelta(m) {
  learnNames(m.names);
  if (m.remove) for (const id of m.remove) { state.rows.delete(id); noteChanged(id); }
  if (m.upsert) for (const a of m.upsert) { state.rows.set(a[R.id], entryOf(a)); noteChanged(a[R.id]); }
  if (m.remove || m.upsert) state.dirty.book = true;
  if (m.alerts) addAlerts(m.alerts);
  if (m.instances) { state.instances = m.instances; state.dirty.health = true; }
  if (m.broker) { state.broker = m.broker; state.dirty.health = true; }
  if (m.symbols) {
    for (const s of m.symbols) state.symbols.set(s.symbol, s);
    state.dirty.health = true;
    state.dirty.symbols = true;
  }
  if (m.ladders) {
    for (const [symbol, ladder] of Object.entries(m.ladders)) {
      if (ladder === null) state.ladders.delete(symbol);
      else state.ladders.set(symbol, ladder);
    }
    state.dirty.ladder = true;
  }
}

// -- rendering, coalesced ---------------------------------------------------------------------
let renderTimer = null;
let lastRender = -Infinity;
function scheduleRender() {
  if (renderTimer !== null) return;
  const wait = Math.max(0, lastRender + RENDER_INTERVAL_MS - performance.now());
  renderTimer = setTimeout(() => { renderTimer = null; requestAnimationFrame(render); }, wait);
}

function render() {
  const began = performance.now();
  lastRender = began;
  const firstAfterSnapshot = state.dirty.book && state.snapshots > 0 && !state.snapshotMore && !window.liqmonStats.bookReady;
  if (state.dirty.book) { rebuildLines(); renderSummary(); }
  renderBook(state.dirty.book);
  if (state.dirty.feed) renderFeed();
  if (state.dirty.symbols) renderSymbolLists();
  if (state.dirty.ladder || state.dirty.symbols) renderLadder();
  if (state.dirty.health) renderHealth();
  renderConnection();
  for (const k of Object.keys(state.dirty)) state.dirty[k] = false;
  state.renders += 1;
  window.liqmonStats.renders = state.renders;
  const took = performance.now() - began;
  const times = (window.liqmonStats.renderMs ||= []);
  times.push(took);
  if (times.length > 200) times.shift();
  document.body.dataset.renders = String(state.renders);
  if (firstAfterSnapshot) {
    window.liqmonStats.bookReady = performance.now();
    window.liqmonStats.firstRenderMs = took;
    performance.mark("liqmon-book-ready");
    document.body.dataset.ready = "1";
  }
}

function rebuildLines() {
  settleOrder();
  const f = state.filter;
  let list = order.list;
  if (f.account) list = list.filter((e) => e.a[R.account].toLowerCase().includes(f.account));
  if (f.symbol) {
    const matching = new Set();
    names.symbols.forEach((name, i) => { if (name.toLowerCase().startsWith(f.symbol)) matching.add(i); });
    list = list.filter((e) => e.a[R.positions].some((p) => matching.has(p[P.symbol])));
  }
  if (f.warned) list = list.filter((e) => e.band !== "lv-0");
  const entries = [], positions = [];
  for (const e of list) {
    const n = Math.max(1, e.a[R.positions].length);
    for (let i = 0; i < n; i++) { entries.push(e); positions.push(i); }
  }
  state.lineEntries = entries;
  state.linePositions = positions;
  state.shownEntities = list.length;
}

function renderSummary() {
  const counts = { "lv-1": 0, "lv-2": 0, "lv-3": 0, "lv-liq": 0 };
  for (const e of state.rows.values()) if (e.band in counts) counts[e.band] += 1;
  const total = state.rows.size;
  $("count-entities").textContent = `${nfInt.format(total)} ${total === 1 ? "entity" : "entities"}`;
  const chips = [["count-l1", "lv-1", "at 0.7"], ["count-l2", "lv-2", "at 0.8"], ["count-l3", "lv-3", "at 0.9+"], ["count-liq", "lv-liq", "liquidating"]];
  for (const [id, band, label] of chips) {
    const node = $(id);
    node.textContent = `${nfInt.format(counts[band])} ${label}`;
    node.classList.toggle("zero", counts[band] === 0);
    node.dataset.count = String(counts[band]);
  }
  const shown = state.shownEntities;
  $("book-count").textContent = shown === total ? `${nfInt.format(total)} shown` : `${nfInt.format(shown)} of ${nfInt.format(total)} shown`;
  $("book-empty").hidden = total > 0;
}

const pool = [];
function lineElement(i) {
  while (pool.length <= i) {
    const cells = COLUMNS.map((name) => el("span", { class: `c-${name}` + (["ratio", "mb", "mm", "mark", "liq", "bkr", "dist"].includes(name) ? " num" : "") }));
    const node = el("div", { class: "line", role: "row" }, ...cells);
    pool.push({ node, cells });
  }
  return pool[i];
}

function renderBook(force) {
  const scroll = $("book-scroll"), rowsEl = $("book-rows");
  const n = state.lineEntries.length;
  $("book-spacer").style.height = `${n * ROW_HEIGHT}px`;
  let start = 0, end = n;
  if (n > FULL_RENDER_MAX) {
    const top = scroll.scrollTop;
    start = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    end = Math.min(n, Math.ceil((top + scroll.clientHeight) / ROW_HEIGHT) + OVERSCAN);
  }
  if (!force && start === state.windowStart && end === state.windowEnd) return;
  state.windowStart = start;
  state.windowEnd = end;
  rowsEl.style.transform = `translateY(${start * ROW_HEIGHT}px)`;
  const count = end - start;
  for (let i = 0; i < count; i++) {
    const line = lineElement(i);
    fillLine(line, state.lineEntries[start + i], state.linePositions[start + i]);
    if (line.node.parentNode !== rowsEl || rowsEl.children[i] !== line.node) rowsEl.append(line.node);
  }
  while (rowsEl.children.length > count) rowsEl.lastChild.remove();
}

function fillLine(line, entry, k) {
  const a = entry.a, p = a[R.positions][k], first = k === 0, c = line.cells, node = line.node;
  node.className = `line ${entry.band}${first ? " first" : " cont"}`;
  node.dataset.entity = String(a[R.id]);
  node.dataset.account = a[R.account];
  node.dataset.level = a[R.level] === null ? "" : String(a[R.level]);
  node.dataset.first = first ? "1" : "0";
  node.dataset.sort = String(entry.sv);
  const cross = a[R.scope] === 0;
  const account = a[R.account], asset = assetOf(a[R.asset]), symbol = symbolOf(a[R.symbol]), side = sideOf(a[R.side]);
  node.dataset.ref = cross ? `${account}/cross/${asset}` : `${account}/isolated/${symbol}/${side}`;
  c[1].textContent = account;
  c[1].title = account;
  c[2].textContent = first ? (cross ? "cross" : "isolated") : "";
  c[3].textContent = first ? (cross ? asset : symbol) : "";
  c[3].title = first ? (cross ? `cross, margin asset ${asset}` : `${symbol} ${side}, margin asset ${asset}`) : "";
  c[4].textContent = first ? (a[R.liquidating] ? "LIQ." : ratio(a[R.ratio])) : "";
  c[4].title = first && a[R.level] !== null ? `alert level ${a[R.level]}` : "";
  c[5].textContent = first ? money(a[R.mb]) : "";
  c[6].textContent = first ? money(a[R.mm]) : "";
  c[5].title = c[6].title = first ? asset : "";
  if (!p) {
    for (let i = 7; i < c.length; i++) c[i].textContent = "";
    return;
  }
  c[7].textContent = `${symbolOf(p[P.symbol])} ${sideOf(p[P.side])} ${nfQty.format(p[P.qty])}`;
  c[8].textContent = price(p[P.mark]);
  c[9].textContent = price(p[P.liq]);
  c[10].textContent = price(p[P.bkr]);
  if (p[P.liq] === null) {
    c[11].textContent = dash;
    c[11].className = "c-dist num";
    c[11].dataset.pct = "";
  } else {
    const d = ((p[P.liq] - p[P.mark]) / p[P.mark]) * 100;
    const away = Math.abs(d);
    c[11].textContent = (d <= 0 ? "↓" : "↑") + (away >= 1000 ? ">999" : away >= 100 ? away.toFixed(0) : away.toFixed(2)) + "%";
    c[11].className = "c-dist num" + (Math.abs(d) < NEAR_PCT ? " near" : "");
    c[11].dataset.pct = String(d);
  }
  if (p[P.stale]) {
    if (!c[12].firstChild || c[12].firstChild.nodeType !== 1) c[12].replaceChildren(el("span", { class: "stale", textContent: "STALE", title: `mark as of ${utc(p[P.mark_ts], true)} UTC: its feed is stale` }));
  } else if (c[12].firstChild) c[12].replaceChildren();
}

function feedItem(item) {
  const kind = item.kind;
  let what, detail;
  if (kind === "margin_warning") {
    what = `WARN ${item.level}`;
    detail = [el("b", { textContent: item.account }), ` ${entityLabel(item)} · ratio ${ratio(item.ratio)}`];
  } else if (kind === "margin_recovered") {
    what = "RECOVERED";
    detail = [el("b", { textContent: item.account }), ` ${entityLabel(item)} · ratio ${ratio(item.ratio)}`];
  } else if (kind === "liquidation") {
    what = "LIQUIDATED";
    detail = [el("b", { textContent: item.account }), ` ${entityLabel(item)} · loss ${money(item.loss)} ${item.asset} · shortfall ${money(item.shortfall)} ${item.asset}`];
  } else if (kind === "feed_stale") {
    what = "FEED STALE";
    detail = [el("b", { textContent: item.symbol || "?" }), ` ${item.venue || ""} · no mark for ${age(item.stale_ms)}`];
  } else {
    what = "FEED OK";
    detail = [el("b", { textContent: item.symbol || "?" }), ` ${item.venue || ""} · marks again after ${age(item.stale_ms)}`];
  }
  const band = kind === "margin_warning" ? " " + bandOfLevel(item.level) : "";
  return el(
    "li",
    { class: `k-${kind}${band}`, data: { kind, id: item.id, account: item.account || "", symbol: item.symbol || "" } },
    el("span", { class: "t", textContent: shortTime(item.ts), title: `${utc(item.ts, true)} UTC (exchange time)` }),
    el("span", { class: "what", textContent: what }),
    el("span", { class: "d", title: detail.map((d) => (typeof d === "string" ? d : d.textContent)).join("") }, ...detail),
  );
}

function renderFeed() {
  const list = $("feed");
  const items = [];
  for (let i = state.alerts.length - 1; i >= 0 && items.length < FEED_SHOWN; i--) items.push(feedItem(state.alerts[i]));
  list.replaceChildren(...items);
  $("feed-empty").hidden = state.alerts.length > 0;
  const liq = state.alerts.filter((a) => a.kind === "liquidation").length;
  $("feed-count").textContent = state.alerts.length ? `${nfInt.format(state.alerts.length)} since start · ${liq} liquidations` : "";
}

function renderSymbolLists() {
  const names = Array.from(state.symbols.keys()).sort();
  const list = $("symbol-list");
  list.replaceChildren(...names.map((s) => el("option", { value: s })));
  for (const select of document.querySelectorAll("#whatif-moves select")) fillSymbolSelect(select);
}

function renderLadder() {
  const select = $("ladder-symbol");
  const symbols = Array.from(state.ladders.values()).sort((x, y) => (y.total.notional - x.total.notional) || x.symbol.localeCompare(y.symbol));
  const chosen = select.value && state.ladders.has(select.value) ? select.value : symbols.length ? symbols[0].symbol : "";
  const options = symbols.map((l) => el("option", { value: l.symbol, textContent: l.symbol }));
  if (select.options.length !== options.length || Array.from(select.options).some((o, i) => o.value !== options[i].value)) {
    select.replaceChildren(...options);
  }
  select.value = chosen;
  const body = $("ladder").tBodies[0];
  const ladder = state.ladders.get(chosen);
  if (!ladder) {
    body.replaceChildren(el("tr", {}, el("td", { colSpan: 4, className: "muted", textContent: "No position with a mark yet." })));
    $("ladder-totals").replaceChildren();
    return;
  }
  const asset = (state.symbols.get(chosen) || {}).asset || "";
  const max = Math.max(1e-12, ...ladder.below.map((b) => b.notional), ...ladder.above.map((b) => b.notional));
  const row = (side, b) => {
    const sign = side === "above" ? "+" : "−";
    const span = b.to_pct === null ? `≥ ${sign}${b.from_pct}%` : `${sign}${b.from_pct}–${b.to_pct}%`;
    const prices = b.far === null ? (side === "above" ? `≥ ${price(b.near)}` : `≤ ${price(b.near)}`) : side === "above" ? `${price(b.near)}–${price(b.far)}` : `${price(b.far)}–${price(b.near)}`;
    const width = `${((100 * b.notional) / max).toFixed(1)}%`;
    const bar = el("span", { class: "b" });
    bar.style.width = width;
    return el(
      "tr",
      { class: `${side}${b.entities ? "" : " empty-bucket"}`, data: { side, from: String(b.from_pct), notional: String(b.notional), entities: String(b.entities) } },
      el("td", { textContent: span }),
      el("td", { className: "num", textContent: prices }),
      el("td", { className: "bar" }, el("div", { class: "barwrap" }, bar, el("span", { textContent: b.entities ? money(b.notional) : "" }))),
      el("td", { className: "num", textContent: b.entities ? nfInt.format(b.entities) : "" }),
    );
  };
  const rows = [];
  for (let i = ladder.above.length - 1; i >= 0; i--) rows.push(row("above", ladder.above[i]));
  rows.push(el("tr", { class: "mark" }, el("td", { textContent: "mark" }), el("td", { className: "num", textContent: price(ladder.mark) }), el("td", { textContent: "▲ shorts · longs ▼", title: "shorts liquidate above the mark, longs below" }), el("td")));
  $("ladder").tHead.rows[0].cells[2].textContent = `notional${asset ? " (" + asset + ")" : ""}, at the mark`;
  for (const b of ladder.below) rows.push(row("below", b));
  body.replaceChildren(...rows);
  const sum = (list) => list.reduce((acc, b) => ({ n: acc.n + b.notional, e: acc.e + b.entities }), { n: 0, e: 0 });
  const below = sum(ladder.below), above = sum(ladder.above);
  const t = ladder.total;
  const part = (label, n, e) => el("span", { textContent: `${label} ${money(n)} (${nfInt.format(e)})` });
  $("ladder-totals").replaceChildren(
    part("below the mark", below.n, below.e), " · ", part("above", above.n, above.e), " · ",
    part("no liq. price", ladder.no_price.notional, ladder.no_price.entities), " · ",
    part("liquidating", ladder.liquidating.notional, ladder.liquidating.entities), el("br"),
    el("b", { id: "ladder-total", data: { notional: String(t.notional), entities: String(t.entities), positions: String(t.positions), symbol: chosen }, textContent: `total ${money(t.notional)} ${asset} in ${nfInt.format(t.entities)} entities, ${nfInt.format(t.positions)} positions` }),
  );
}

function renderHealth() {
  const now = Date.now();
  const instances = $("instances").tBodies[0];
  instances.replaceChildren(...(state.instances.length ? state.instances.map((i) =>
    el("tr", { data: { instance: i.instance, status: i.status } },
      el("td", { textContent: i.instance }),
      el("td", { className: i.status, textContent: i.status }),
      el("td", { textContent: i.version || dash }),
      el("td", { textContent: i.status === "online" ? `${utc(i.started_at, true)} (${age(now - i.started_at)})` : `${utc(i.ts, true)}`, title: "UTC" }),
    )) : [el("tr", {}, el("td", { colSpan: 4, className: "muted", textContent: "No instance seen on the broker." }))]));
  const chips = $("instance-chips");
  chips.replaceChildren(...state.instances.map((i) => el("span", { class: `inst ${i.status}`, textContent: i.instance, title: `${i.instance}: ${i.status}` })));
  const feeds = $("feeds").tBodies[0];
  const symbols = Array.from(state.symbols.values()).sort((x, y) => (Number(y.stale) - Number(x.stale)) || x.symbol.localeCompare(y.symbol));
  feeds.replaceChildren(...symbols.slice(0, 200).map((s) => {
    const feed = s.feed;
    const label = s.stale ? `STALE${feed && feed.venue ? " · " + feed.venue : ""}${s.stale_positions ? ` · ${s.stale_positions} positions` : ""}` : `ok${feed && feed.venue ? " · " + feed.venue : ""}`;
    return el("tr", { data: { symbol: s.symbol, stale: s.stale ? "1" : "0" } },
      el("td", { textContent: s.symbol }),
      el("td", { className: "num", textContent: price(s.mark) }),
      el("td", { textContent: s.mark_ts === null ? "no tick yet" : utc(s.mark_ts, true), title: "exchange time, UTC" }),
      el("td", { className: "num", textContent: s.mark_ts === null ? dash : age(now - s.mark_ts), title: "wall clock minus the mark's exchange time" }),
      el("td", { className: s.stale ? "feed-stale" : "feed-ok", textContent: label }),
      el("td", { className: "num", textContent: nfInt.format(s.entities) }),
    );
  }));
}

function renderConnection() {
  const conn = $("conn");
  conn.dataset.state = state.connected ? "up" : "down";
  conn.textContent = state.connected ? "live" : "reconnecting…";
  const broker = $("broker");
  const b = state.broker;
  broker.dataset.state = b.connected && b.synced ? "up" : "down";
  broker.textContent = `broker ${b.url || ""} ${b.connected ? (b.synced ? "✓" : "syncing…") : "down, reconnecting"}`;
}

// -- what-if ----------------------------------------------------------------------------------
function fillSymbolSelect(select) {
  const current = select.value;
  const names = Array.from(state.symbols.keys()).sort();
  if (select.options.length !== names.length || Array.from(select.options).some((o, i) => o.value !== names[i])) {
    select.replaceChildren(...names.map((s) => el("option", { value: s, textContent: s })));
  }
  if (names.includes(current)) select.value = current;
  else if (names.length) {
    const largest = Array.from(state.ladders.values()).sort((x, y) => y.total.notional - x.total.notional)[0];
    select.value = largest ? largest.symbol : names[0];
  }
}

function addMoveRow(move = "-8%") {
  const select = el("select", { "aria-label": "symbol" });
  const input = el("input", { type: "text", value: move, "aria-label": "move", placeholder: "-8%" });
  const remove = el("button", { type: "button", class: "remove", textContent: "×", title: "remove" });
  const row = el("div", { class: "move" }, select, input, remove);
  remove.addEventListener("click", () => { if ($("whatif-moves").children.length > 1) row.remove(); });
  $("whatif-moves").append(row);
  fillSymbolSelect(select);
}

function askWhatIf(event) {
  event.preventDefault();
  const moves = {};
  for (const row of $("whatif-moves").children) {
    const symbol = row.querySelector("select").value;
    const move = row.querySelector("input").value.trim();
    if (!symbol) continue;
    if (!/^[+-]?\d+(\.\d+)?%?$/.test(move)) {
      showWhatIfError(`${move || "(empty)"} is not a move: write -8% or +5% or -0.08`);
      return;
    }
    moves[symbol] = move;
  }
  if (!Object.keys(moves).length) { showWhatIfError("pick a symbol first"); return; }
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) { showWhatIfError("not connected to the dashboard"); return; }
  const req = state.whatif.next++;
  state.whatif.pending = req;
  state.ws.send(JSON.stringify({ t: "shock", req, moves }));
  $("whatif-result").replaceChildren(el("div", { class: "status", textContent: `asking the instances: ${Object.entries(moves).map(([s, m]) => `${s} ${m}`).join(", ")}…` }));
  $("whatif-result").dataset.state = "asking";
}

function showWhatIfError(text) {
  $("whatif-result").replaceChildren(el("div", { class: "error", textContent: text }));
  $("whatif-result").dataset.state = "error";
}

function outcomeRef(o) {
  return o.scope === "cross" ? `${o.account}/cross/${o.asset}` : `${o.account}/isolated/${o.symbol}/${o.side}`;
}

function outcomeTable(caption, items, columns) {
  const head = el("tr", {}, ...columns.map(([label, , num]) => el("th", { className: num ? "num" : "", textContent: label })));
  const rows = items.slice(0, RESULT_ROWS).map((o) => el("tr", { class: caption.toLowerCase().split(" ")[0], data: { account: o.account, instance: o.instance, ref: outcomeRef(o), level: o.level === undefined ? "" : String(o.level) } },
    ...columns.map(([, value, num]) => el("td", { className: num ? "num" : "", textContent: value(o) }))));
  const table = el("table", {}, el("caption", { textContent: `${caption} (${nfInt.format(items.length)})` }), el("thead", {}, head), el("tbody", {}, ...rows));
  if (items.length > RESULT_ROWS) table.append(el("tfoot", {}, el("tr", {}, el("td", { colSpan: columns.length, className: "muted", textContent: `… and ${nfInt.format(items.length - RESULT_ROWS)} more` }))));
  return table;
}

function showWhatIf(m) {
  if (m.req !== state.whatif.pending) return; // an older question
  const out = $("whatif-result");
  if (m.error) { showWhatIfError(m.error); return; }
  const a = m.answer;
  const t = a.totals;
  const parts = [];
  const answered = a.instances.length
    ? `${a.instances.length} of ${a.asked.length || a.instances.length} online instances answered in ${Math.round(a.waited_ms)} ms`
    : `no instance answered within the timeout (asked: ${a.asked.join(", ") || "none online"})`;
  parts.push(el("div", { class: "status", textContent: answered + (a.missing.length ? ` · no answer from ${a.missing.join(", ")}` : "") }));
  for (const [name, r] of Object.entries(a.refusals || {})) parts.push(el("div", { class: "error", textContent: `${name} refused: ${r.error}: ${r.detail}` }));
  const moved = Object.entries(a.moves).map(([s, mv]) => {
    const marks = Object.values((a.marks || {})[s] || {});
    return `${s} ${pct(mv * 100)}${marks.length ? ` → ${[...new Set(marks.map(price))].join(" / ")}` : ""}`;
  });
  if (moved.length) parts.push(el("div", { textContent: moved.join(", ") }));
  for (const [s, why] of Object.entries(a.refused || {})) parts.push(el("div", { class: "error", textContent: `${s}: ${why.replaceAll("_", " ")} (no instance could shock it)` }));
  const loss = Object.entries(t.loss).map(([asset, v]) => `${money(v)} ${asset}`).join(" + ") || "0";
  const shortfall = Object.entries(t.shortfall).map(([asset, v]) => `${money(v)} ${asset}`).join(" + ") || "0";
  parts.push(el("div", { class: "totals", id: "whatif-totals", data: { liquidations: String(t.liquidations), warnings: String(t.warnings), recoveries: String(t.recoveries) },
    textContent: `${t.liquidations} liquidations · loss ${loss} · shortfall ${shortfall} · ${t.warnings} warnings · ${t.recoveries} recoveries · ${nfInt.format(t.entities_valued)} entities valued` }));
  const who = a.instances.length > 1 ? [["instance", (o) => o.instance]] : [];
  const ent = ["entity", (o) => `${o.account} ${entityLabel(o)}`];
  if (a.liquidations.length) parts.push(outcomeTable("Liquidations", a.liquidations, [ent, ["loss", (o) => `${money(o.loss)} ${o.asset}`, true], ["shortfall", (o) => `${money(o.shortfall)} ${o.asset}`, true], ["ratio", (o) => ratio(o.margin_ratio), true], ...who]));
  if (a.warnings.length) parts.push(outcomeTable("Warnings", a.warnings, [ent, ["level", (o) => String(o.level), true], ["ratio", (o) => ratio(o.margin_ratio), true], ...who]));
  if (a.recoveries.length) parts.push(outcomeTable("Recoveries", a.recoveries, [ent, ["ratio", (o) => ratio(o.margin_ratio), true], ...who]));
  out.replaceChildren(...parts);
  out.dataset.state = "answered";
}

// -- the connection ---------------------------------------------------------------------------
let retries = 0;
function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  state.ws = ws;
  ws.addEventListener("open", () => {
    retries = 0;
    state.connected = true;
    window.liqmonStats.openedAt ??= performance.now();
    scheduleRender();
  });
  ws.addEventListener("message", (event) => {
    const received = performance.now();
    const m = JSON.parse(event.data);
    if (m.t === "snapshot" || m.t === "snapshot_rows") {
      const parsed = performance.now();
      const stats = window.liqmonStats;
      if (m.t === "snapshot") {
        applySnapshot(m);
        Object.assign(stats.lastSnapshot, { chars: 0, receivedAt: received, parseMs: 0, parts: 0 });
        state.snapshotMore = m.more;
      } else {
        for (const a of m.rows) state.rows.set(a[R.id], entryOf(a));
        state.snapshotMore -= 1;
        stats.lastSnapshot.applyMs += performance.now() - parsed;
      }
      stats.lastSnapshot.chars += event.data.length;
      stats.lastSnapshot.parseMs += parsed - received;
      stats.lastSnapshot.parts += 1;
      if (state.snapshotMore > 0) return; // the rest of the book is on its way
      stats.lastSnapshot.rows = state.rows.size;
      stats.lastSnapshot.completeAt = performance.now();
      order.full = true;
      if (renderTimer !== null) { clearTimeout(renderTimer); renderTimer = null; }
      render(); // the whole book at once, not after the next interval
      return;
    }
    else if (m.t === "delta") applyDelta(m);
    else if (m.t === "shock_answer") showWhatIf(m);
    scheduleRender();
  });
  ws.addEventListener("close", () => {
    state.connected = false;
    scheduleRender();
    setTimeout(connect, Math.min(10000, 500 * 2 ** retries++));
  });
}

function onFilter() {
  state.filter.account = $("filter-account").value.trim().toLowerCase();
  state.filter.symbol = $("filter-symbol").value.trim().toLowerCase();
  state.filter.warned = $("filter-warned").checked;
  state.dirty.book = true;
  $("book-scroll").scrollTop = 0;
  renderNow(); // the user's own input is not coalesced with the updates
}

function renderNow() {
  if (renderTimer !== null) { clearTimeout(renderTimer); renderTimer = null; }
  requestAnimationFrame(render);
}

function start() {
  if (new URLSearchParams(location.search).has("token")) {
    // the dashboard set its cookie: keep the token out of the address bar and the history
    history.replaceState(null, "", location.pathname);
  }
  $("filter-account").addEventListener("input", onFilter);
  $("filter-symbol").addEventListener("input", onFilter);
  $("filter-warned").addEventListener("change", onFilter);
  $("book-scroll").addEventListener("scroll", () => requestAnimationFrame(() => renderBook(false)), { passive: true });
  $("ladder-symbol").addEventListener("change", () => { state.dirty.ladder = true; renderNow(); });
  $("whatif-form").addEventListener("submit", askWhatIf);
  $("whatif-add").addEventListener("click", () => addMoveRow("-8%"));
  for (const button of document.querySelectorAll("[data-preset]")) {
    button.addEventListener("click", () => { for (const input of document.querySelectorAll("#whatif-moves input")) input.value = button.dataset.preset; });
  }
  addMoveRow("-8%");
  setInterval(() => { $("clock").textContent = `${utc(Date.now(), true)} UTC`; state.dirty.health = true; scheduleRender(); }, 1000);
  $("clock").textContent = `${utc(Date.now(), true)} UTC`;
  connect();
}

start();
