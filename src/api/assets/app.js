// hazgate dispatch-room board. No framework, no CDN; speaks to /api/v1 with a bearer
// token and follows /api/v1/live (snapshot, then deltas).
"use strict";

const I18N = {
  zh: { title: "安全监控 · 调度室", offline: "未连接", online: "已连接", flood: "报警泛滥", mute: "静音", unmute: "取消静音",
        logout: "退出", token: "访问令牌", login: "登录", alarms: "实时报警", time: "时间", point: "测点", name: "名称",
        grade: "等级", value: "数值", peak: "峰值", state: "状态", action: "操作", no_alarms: "无报警", hazards: "重大危险源",
        trend: "趋势", points: "测点", devices: "设备通讯", device: "设备", status: "状态", polls: "轮询", last_error: "最后错误",
        ack_title: "确认报警", operator: "操作员", comment: "处理意见", confirm: "确认", cancel: "取消", ack: "确认",
        unacked: "未确认", acked: "已确认", rtn_unacked: "已恢复未确认", normal: "正常", shelved: "已搁置",
        on: "在线", off: "离线", red: "红", orange: "橙", yellow: "黄", blue: "蓝", bad_token: "令牌无效",
        value_k: "超限", rate: "变化率", sensor_fault: "传感器故障", comm: "通讯故障", power_cut: "断电", open_alarms: "报警",
        hgrade: ["", "一级", "二级", "三级", "四级"],
        actions: "断电控制", power: "供电", cause: "原因", feed: "馈电", reason: "原因", powered: "供电", cut: "断电",
        manual_cut: "远程断电", release: "解除断电", latched: "待解除", lockout: "故障闭锁", manual: "手动断电",
        feed_ok: "正常", feed_fault: "馈电异常", write_fault: "写入失败" },
  en: { title: "Safety monitoring · dispatch room", offline: "offline", online: "live", flood: "ALARM FLOOD", mute: "Mute", unmute: "Unmute",
        logout: "Log out", token: "Access token", login: "Log in", alarms: "Active alarms", time: "Time", point: "Point", name: "Name",
        grade: "Grade", value: "Value", peak: "Peak", state: "State", action: "Action", no_alarms: "No alarms", hazards: "Major hazard sources",
        trend: "Trend", points: "Points", devices: "Device comms", device: "Device", status: "Status", polls: "Polls", last_error: "Last error",
        ack_title: "Acknowledge alarm", operator: "Operator", comment: "Comment", confirm: "Acknowledge", cancel: "Cancel", ack: "Ack",
        unacked: "unacknowledged", acked: "acknowledged", rtn_unacked: "returned, unacked", normal: "normal", shelved: "shelved",
        on: "online", off: "offline", red: "red", orange: "orange", yellow: "yellow", blue: "blue", bad_token: "invalid token",
        value_k: "limit", rate: "rate", sensor_fault: "sensor fault", comm: "comm failure", power_cut: "power cut", open_alarms: "alarms",
        hgrade: ["", "grade 1", "grade 2", "grade 3", "grade 4"],
        actions: "Power-cut control", power: "Power", cause: "Cause", feed: "Feed", reason: "Reason", powered: "on", cut: "CUT",
        manual_cut: "Remote cut", release: "Release", latched: "awaiting release", lockout: "fault lockout", manual: "manual cut",
        feed_ok: "ok", feed_fault: "feedback fault", write_fault: "write failed" },
};
const RANK = { red: 4, orange: 3, yellow: 2, blue: 1 };

const st = {
  lang: localStorage.getItem("hazgate.lang") || "zh",
  token: null, muted: false, ws: null, snap: null, catalog: new Map(), hazards: [],
  alarms: [], points: new Map(), trendPoint: null, trendData: [], ackId: null, audio: null,
  role: null, actions: [], act: null,
};
const $ = (id) => document.getElementById(id);
const t = (k) => (I18N[st.lang][k] !== undefined ? I18N[st.lang][k] : k);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function fmtTime(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  return d.toLocaleTimeString(st.lang === "zh" ? "zh-CN" : "en-GB", { hour12: false });
}
function fmtVal(v) { return v === null || v === undefined ? "—" : (Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(2)); }

function applyI18n() {
  document.documentElement.lang = st.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((e) => { e.textContent = t(e.dataset.i18n); });
  $("lang").textContent = st.lang === "zh" ? "English" : "中文";
  $("mute").textContent = st.muted ? t("unmute") : t("mute");
  setConn(st.ws && st.ws.readyState === 1);
  renderAll();
  renderActions();
}

async function api(path, opts) {
  const o = Object.assign({ headers: {} }, opts || {});
  o.headers.Authorization = "Bearer " + st.token;
  if (o.body) o.headers["Content-Type"] = "application/json";
  const r = await fetch("/api/v1" + path, o);
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (!r.ok) { const e = new Error((body && body.error) || r.statusText); e.status = r.status; throw e; }
  return body;
}

function setConn(on) {
  const c = $("conn");
  c.textContent = on ? t("online") : t("offline");
  c.className = "conn " + (on ? "on" : "off");
}

// ---- login ----
function showLogin(msg) {
  $("main").classList.add("hidden");
  $("login").classList.remove("hidden");
  $("login-error").textContent = msg || "";
}
async function start(token) {
  st.token = token;
  try {
    const who = await api("/whoami");
    sessionStorage.setItem("hazgate.token", token);
    $("site").textContent = who.site_name + " · " + who.name + " (" + who.role + ")";
    st.role = who.role;
  } catch (e) {
    sessionStorage.removeItem("hazgate.token");
    showLogin(e.status === 401 ? t("bad_token") : e.message);
    return;
  }
  $("login").classList.add("hidden");
  $("main").classList.remove("hidden");
  const pts = await api("/points");
  for (const p of pts.points) st.catalog.set(p.index, p);
  const hz = await api("/hazard-sources");
  st.hazards = hz.hazard_sources;
  connect();
  refreshDevices();
  setInterval(refreshDevices, 5000);
  refreshActions();
  setInterval(refreshActions, 2000);
}

// ---- live stream ----
function connect() {
  const proto = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(proto + location.host + "/api/v1/live", ["hazgate", "bearer." + st.token]);
  st.ws = ws;
  ws.onopen = () => setConn(true);
  ws.onclose = () => { setConn(false); setTimeout(connect, 2000); };
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.type === "snapshot") {
      st.points = new Map(msg.points.map((p) => [p.index, p]));
      st.alarms = msg.alarms;
      st.hazLive = new Map(msg.hazard_sources.map((h) => [h.id, h.colour]));
      st.flood = msg.flood;
      if (st.trendPoint === null && st.catalog.size) {
        // Start with a trend worth watching: the point of the worst alarm, else the first.
        const worst = sortedAlarms()[0];
        selectTrend(worst ? worst.point : st.catalog.keys().next().value);
      }
    } else {
      for (const p of msg.points) { st.points.set(p.index, p); if (p.index === st.trendPoint && p.value !== null) pushTrend(p.ts, p.value); }
      if (msg.alarms) st.alarms = msg.alarms;
      for (const h of msg.hazard_sources) st.hazLive.set(h.id, h.colour);
      st.flood = msg.flood;
    }
    renderAll();
  };
}

// ---- rendering ----
function renderAll() {
  if (!st.token || !st.points) return;
  renderAlarms(); renderHazards(); renderPoints(); drawTrend();
  $("flood").classList.toggle("hidden", !st.flood);
}

function sortedAlarms() {
  return st.alarms.slice().sort((a, b) => (RANK[b.colour] - RANK[a.colour]) || (b.raised_at - a.raised_at));
}

function renderAlarms() {
  const body = $("alarm-body");
  body.replaceChildren();
  const list = sortedAlarms();
  let unacked = 0;
  for (const a of list) {
    const p = st.catalog.get(a.point) || { id: "#" + a.point, name: "", unit: "" };
    const tr = el("tr", "g-" + a.colour);
    tr.dataset.alarm = a.id;
    const needs = (a.state === "unacked" || a.state === "rtn_unacked") && !a.shelved;
    if (needs) { tr.classList.add("unacked"); unacked++; }
    tr.append(el("td", null, fmtTime(a.raised_at)), el("td", null, p.id), el("td", null, p.name));
    const kind = a.kind === "value" ? a.grade_name : t(a.kind);
    tr.append(el("td", null, kind + (a.power_cut ? " · " + t("power_cut") : "")));
    tr.append(el("td", null, fmtVal(a.value) + " " + (p.unit || "")), el("td", null, fmtVal(a.peak)));
    let state = t(a.state) + (a.shelved ? " · " + t("shelved") : "");
    if (a.ack) state += " · " + a.ack.by;
    tr.append(el("td", null, state));
    const td = el("td");
    if (a.state === "unacked" || a.state === "rtn_unacked") {
      const b = el("button", "ack-btn", t("ack"));
      b.type = "button";
      b.dataset.alarm = a.id;
      b.addEventListener("click", () => openAck(a, p));
      td.append(b);
    }
    tr.append(td);
    body.append(tr);
  }
  $("no-alarms").classList.toggle("hidden", list.length > 0);
  $("alarm-count").textContent = list.length ? String(list.length) : "";
  st.unacked = unacked;
}

function renderHazards() {
  const box = $("hazard-list");
  box.replaceChildren();
  for (const h of st.hazards) {
    const colour = (st.hazLive && st.hazLive.get(h.id)) || "blue";
    const open = st.alarms.filter((a) => { const p = st.catalog.get(a.point); return p && p.hazard_source === h.id; }).length;
    const c = el("div", "card c-" + colour);
    c.dataset.hazard = h.id;
    c.append(el("div", "big", h.name), el("div", "muted", h.id + " · " + (t("hgrade")[h.grade] || "") + " · " + t(colour) + (open ? " · " + open + " " + t("open_alarms") : "")));
    box.append(c);
  }
}

function renderPoints() {
  const grid = $("point-grid");
  grid.replaceChildren();
  for (const [i, p] of st.catalog) {
    const l = st.points.get(i) || {};
    const bad = l.quality && l.quality !== "good";
    const c = el("div", "pt" + (l.colour ? " c-" + l.colour : "") + (bad ? " bad" : "") + (st.trendPoint === i ? " sel" : ""));
    c.dataset.point = p.id;
    c.append(el("div", "muted", p.id), el("div", null, p.name));
    c.append(el("div", "v", fmtVal(l.value) + " " + (p.unit || "")));
    c.append(el("div", "q", (l.quality || "—") + (l.grade ? " · " + l.grade : "") + (l.out_of_service ? " · OOS" : "")));
    c.addEventListener("click", () => selectTrend(i));
    grid.append(c);
  }
}

// ---- trend ----
async function selectTrend(i) {
  st.trendPoint = i;
  const p = st.catalog.get(i);
  $("trend-title").textContent = p.id + " " + p.name + (p.unit ? " (" + p.unit + ")" : "");
  st.trendData = [];
  try {
    const now = Date.now();
    const h = await api("/points/" + encodeURIComponent(p.id) + "/history?from=" + (now - 2 * 3600 * 1000) + "&to=" + (now + 1) + "&limit=20000");
    st.trendData = h.readings.filter((r) => r.value !== null).map((r) => [r.ts, r.value]);
  } catch (_) { st.trendData = []; }
  renderPoints(); drawTrend();
}
function pushTrend(ts, v) {
  const d = st.trendData;
  if (!d.length || d[d.length - 1][0] < ts) d.push([ts, v]);
  const cut = Date.now() - 2 * 3600 * 1000;
  while (d.length && d[0][0] < cut) d.shift();
}
function drawTrend() {
  const cv = $("trend-canvas");
  const ctx = cv.getContext("2d");
  const W = cv.width, H = cv.height, L = 50, B = 20;
  ctx.clearRect(0, 0, W, H);
  const p = st.catalog.get(st.trendPoint);
  const d = st.trendData;
  if (!p || d.length < 2) return;
  let lo = Math.min(...d.map((x) => x[1])), hi = Math.max(...d.map((x) => x[1]));
  for (const g of p.grades || []) { lo = Math.min(lo, g.trigger); hi = Math.max(hi, g.trigger); }
  if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
  const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
  const t0 = d[0][0], t1 = d[d.length - 1][0];
  const X = (ts) => L + (W - L - 10) * (ts - t0) / Math.max(1, t1 - t0);
  const Y = (v) => (H - B) - (H - B - 10) * (v - lo) / (hi - lo);
  ctx.font = "12px sans-serif"; ctx.fillStyle = "#8b98a5"; ctx.strokeStyle = "#2a3440";
  for (let k = 0; k <= 4; k++) { const v = lo + (hi - lo) * k / 4; ctx.beginPath(); ctx.moveTo(L, Y(v)); ctx.lineTo(W, Y(v)); ctx.stroke(); ctx.fillText(fmtVal(v), 2, Y(v) + 4); }
  ctx.fillText(fmtTime(t0), L, H - 4); ctx.fillText(fmtTime(t1), W - 70, H - 4);
  const colours = { red: "#d91e18", orange: "#f07800", yellow: "#e8c500", blue: "#1e6fd9" };
  for (const g of p.grades || []) { ctx.strokeStyle = colours[g.colour]; ctx.setLineDash([6, 4]); ctx.beginPath(); ctx.moveTo(L, Y(g.trigger)); ctx.lineTo(W, Y(g.trigger)); ctx.stroke(); ctx.fillStyle = colours[g.colour]; ctx.fillText(g.name, W - 60, Y(g.trigger) - 3); }
  ctx.setLineDash([]); ctx.strokeStyle = "#58a6ff"; ctx.lineWidth = 2; ctx.beginPath();
  d.forEach((x, k) => (k ? ctx.lineTo(X(x[0]), Y(x[1])) : ctx.moveTo(X(x[0]), Y(x[1]))));
  ctx.stroke(); ctx.lineWidth = 1;
}

// ---- devices ----
async function refreshDevices() {
  let r;
  try { r = await api("/devices"); } catch (_) { return; }
  const body = $("device-body");
  body.replaceChildren();
  for (const d of r.devices) {
    const tr = el("tr");
    const on = d.online !== false;
    tr.append(el("td", null, d.name || d.id), el("td", on ? "online" : "offline", on ? t("on") : t("off")));
    tr.append(el("td", null, d.rtt_ms !== undefined ? d.rtt_ms.toFixed(1) + " ms" : "—"));
    tr.append(el("td", null, d.polls !== undefined ? d.polls + " / " + d.failed_polls : (d.messages || 0)));
    tr.append(el("td", "muted", d.last_error || ""));
    body.append(tr);
  }
}

// ---- safety actions (power cut) ----
async function refreshActions() {
  let r;
  try { r = await api("/actions"); } catch (_) { return; }
  st.actions = r.actions;
  renderActions();
}
function renderActions() {
  $("actions-panel").classList.toggle("hidden", !st.actions.length);
  const body = $("action-body");
  body.replaceChildren();
  for (const a of st.actions) {
    const tr = el("tr", a.cut ? "g-red" : (a.ok ? null : "g-orange"));
    tr.dataset.action = a.id;
    tr.append(el("td", null, a.name || a.id), el("td", a.cut ? "cut" : "online", a.cut ? t("cut") : t("powered")));
    const cause = [];
    if (a.cutting.length) cause.push(a.cutting.join(", "));
    if (a.faulted.length) cause.push(t("lockout") + ": " + a.faulted.join(", "));
    if (a.manual_cut) cause.push(t("manual"));
    if (a.latched && !a.cutting.length && !a.faulted.length) cause.push(t("latched"));
    tr.append(el("td", null, cause.join("; ")));
    const faults = a.relays.filter((x) => x.feedback_fault).length, wf = a.relays.filter((x) => x.write_fault).length;
    tr.append(el("td", a.ok ? "online" : "offline", a.ok ? t("feed_ok") : (faults ? t("feed_fault") : t("write_fault"))));
    const td = el("td");
    if (st.role === "admin") {
      const b = el("button", a.cut ? null : "danger", a.cut ? t("release") : t("manual_cut"));
      b.dataset.act = a.cut ? "release" : "cut";
      b.addEventListener("click", () => openAct(a, a.cut ? "release" : "cut"));
      td.append(b);
    }
    if (wf) td.append(el("span", "error", " " + t("write_fault")));
    tr.append(td);
    body.append(tr);
  }
}
function openAct(a, what) {
  st.act = { id: a.id, what };
  $("act-title").textContent = t(what === "cut" ? "manual_cut" : "release");
  $("act-target").textContent = a.name || a.id;
  $("act-error").textContent = "";
  $("act-name").value = localStorage.getItem("hazgate.operator") || "";
  $("act-reason").value = "";
  $("act-dialog").showModal();
}
async function submitAct(ev) {
  ev.preventDefault();
  const reason = $("act-reason").value.trim();
  if (!reason) { $("act-error").textContent = t("reason") + "?"; return; }
  const name = $("act-name").value.trim();
  try {
    await api("/actions/" + encodeURIComponent(st.act.id) + "/" + st.act.what, { method: "POST", body: JSON.stringify(name ? { name, reason } : { reason }) });
    if (name) localStorage.setItem("hazgate.operator", name);
    $("act-dialog").close();
    refreshActions();
  } catch (e) { $("act-error").textContent = e.message; }
}

// ---- acknowledge ----
function openAck(a, p) {
  st.ackId = a.id;
  $("ack-target").textContent = "#" + a.id + " " + p.id + " " + (a.grade_name || t(a.kind));
  $("ack-error").textContent = "";
  $("ack-name").value = localStorage.getItem("hazgate.operator") || "";
  $("ack-comment").value = "";
  $("ack-dialog").showModal();
}
async function submitAck(ev) {
  ev.preventDefault();
  const name = $("ack-name").value.trim();
  if (!name) { $("ack-error").textContent = t("operator") + "?"; return; }
  try {
    await api("/alarms/" + st.ackId + "/ack", { method: "POST", body: JSON.stringify({ name, comment: $("ack-comment").value }) });
    localStorage.setItem("hazgate.operator", name);
    $("ack-dialog").close();
  } catch (e) { $("ack-error").textContent = e.message; }
}

// ---- sound: a WebAudio beep while unacknowledged alarms wait ----
function beep() {
  if (st.muted || !st.unacked) return;
  try {
    if (!st.audio) st.audio = new (window.AudioContext || window.webkitAudioContext)();
    const ctx = st.audio;
    if (ctx.state === "suspended") { ctx.resume(); }
    const o = ctx.createOscillator(), g = ctx.createGain();
    o.frequency.value = sortedAlarms().some((a) => a.colour === "red") ? 1200 : 880;
    g.gain.value = 0.15;
    o.connect(g); g.connect(ctx.destination);
    o.start(); o.stop(ctx.currentTime + 0.25);
  } catch (_) { /* audio unavailable: the board still blinks */ }
}

document.addEventListener("DOMContentLoaded", () => {
  $("lang").addEventListener("click", () => { st.lang = st.lang === "zh" ? "en" : "zh"; localStorage.setItem("hazgate.lang", st.lang); applyI18n(); });
  $("mute").addEventListener("click", () => { st.muted = !st.muted; $("mute").classList.toggle("on", st.muted); applyI18n(); });
  $("logout").addEventListener("click", () => { sessionStorage.removeItem("hazgate.token"); location.hash = ""; location.reload(); });
  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); start($("token").value.trim()); });
  $("ack-form").addEventListener("submit", submitAck);
  $("ack-cancel").addEventListener("click", () => $("ack-dialog").close());
  $("act-form").addEventListener("submit", submitAct);
  $("act-cancel").addEventListener("click", () => $("act-dialog").close());
  setInterval(() => { $("clock").textContent = new Date().toLocaleString(st.lang === "zh" ? "zh-CN" : "en-GB", { hour12: false }); }, 1000);
  setInterval(beep, 2000);
  applyI18n();
  // A token in the fragment (#token=…) never reaches the server's logs.
  const m = location.hash.match(/token=([A-Za-z0-9._~-]+)/);
  if (m) { history.replaceState(null, "", location.pathname); start(m[1]); return; }
  const saved = sessionStorage.getItem("hazgate.token");
  if (saved) start(saved); else showLogin();
});
