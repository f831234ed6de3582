// The session-engine dashboard. It reads the API like any client: /health, the session
// list, a session's activities, and the WebSocket /ws/sessions, opened on the last
// RECENT events of the log and resumed with from = last LSN + 1 when it drops.
// Everything from the API is shown as text (textContent), never as HTML.
// A server with a token answers 401: the page asks for the token once, keeps it in
// sessionStorage (this tab only), and sends it as Authorization on every fetch and as a
// WebSocket subprotocol ("bearer." + base64url), never in a URL.
"use strict";

const RECENT = 500; // events of the log replayed at load (recent activity and runs)
const KEEP = 200; // lines kept in each list
const $ = (id) => document.getElementById(id);
const state = {
  selected: null, // the selected session's id
  loading: false, // its activities are being fetched
  reload: false, // an activity of it arrived while they were
  last: null, // the last LSN received (an event's or the caught-up marker's)
  live: false, // the stream has caught up
  runs: new Map(), // run id -> { id, session, program, state, output }
  shownRun: null,
  retry: 500,
  socket: null, // the WebSocket in use
};

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (tag === "td") e.title = e.textContent;
  if (cls) e.className = cls;
  return e;
}
const time = (us) => (us ? new Date(us / 1000).toLocaleTimeString() : "");
function pill(id, text, cls) {
  $(id).textContent = text;
  $(id).className = "pill " + cls;
}
function trim(list) {
  while (list.children.length > KEEP) list.lastElementChild.remove();
}

const TOKEN_KEY = "session-engine-token";
const token = () => sessionStorage.getItem(TOKEN_KEY);
let asking = null; // the promise of the token the user is asked for

function askToken(message) {
  if (asking) return asking;
  $("login-message").textContent = message;
  $("login").hidden = false;
  $("token").focus();
  asking = new Promise((resolve) => {
    $("login").onsubmit = (e) => {
      e.preventDefault();
      const t = $("token").value.trim();
      if (!t) return;
      sessionStorage.setItem(TOKEN_KEY, t);
      $("token").value = "";
      $("login").hidden = true;
      asking = null;
      resolve();
    };
  });
  return asking;
}

function b64url(text) {
  let bin = "";
  for (const b of new TextEncoder().encode(text)) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function api(path) {
  for (;;) {
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = "Bearer " + t;
    const r = await fetch(path, { headers });
    if (r.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      await askToken(t ? "the token was refused" : "");
      continue;
    }
    let v = null;
    try { v = await r.json(); } catch (_) { /* not JSON */ }
    if (!v || !v.success) throw new Error((v && v.error) || "HTTP " + r.status);
    return v.data;
  }
}

async function health() {
  try {
    const h = await api("/health");
    pill("health", h.status, "ok");
    return h.last_lsn;
  } catch (e) {
    pill("health", "unhealthy: " + e.message, "bad");
    return null;
  }
}

async function loadSessions() {
  let data;
  try {
    data = await api("/api/claude/sessions?limit=1000");
  } catch (e) {
    $("session-total").textContent = "(" + e.message + ")";
    return;
  }
  $("session-total").textContent = "(" + data.total + ")";
  $("sessions").replaceChildren(...data.sessions.map((s) => {
    const tr = el("tr", null, s.id === state.selected ? "selected" : "");
    tr.dataset.id = s.id;
    tr.append(el("td", s.id), el("td", s.name), el("td", s.agent || ""),
      el("td", s.status, "status-" + s.status), el("td", s.activity_count),
      el("td", time(s.last_activity)));
    tr.addEventListener("click", () => select(s.id));
    return tr;
  }));
}

let refreshTimer = null;
function refreshSoon() {
  if (refreshTimer === null) {
    refreshTimer = setTimeout(() => { refreshTimer = null; loadSessions(); }, 150);
  }
}

function activityLine(a) {
  const li = el("li");
  li.append(el("code", time(a.timestamp)), " ", el("strong", a.action));
  if (a.details !== null && a.details !== undefined) li.append(" ", el("code", JSON.stringify(a.details)));
  return li;
}

async function select(id) {
  state.selected = id;
  $("selected").textContent = id;
  for (const tr of $("sessions").children) tr.className = tr.dataset.id === id ? "selected" : "";
  state.loading = true;
  do {
    // An activity arriving during the fetch sets `reload`: fetch again, so none is lost
    // or shown twice.
    state.reload = false;
    const base = "/api/claude/sessions/" + encodeURIComponent(id) + "/activities";
    let items;
    try {
      const head = await api(base + "?limit=1");
      const offset = Math.max(0, head.total - 100);
      items = (await api(base + "?limit=100&offset=" + offset)).items.map(activityLine);
    } catch (e) {
      items = [el("li", e.message, "muted")];
    }
    if (state.selected !== id) return;
    $("activity").replaceChildren(...items.reverse());
  } while (state.reload);
  state.loading = false;
}

function renderRuns() {
  const runs = [...state.runs.values()].sort((a, b) => b.id - a.id).slice(0, 20);
  $("runs").replaceChildren(...runs.map((r) => {
    const tr = el("tr");
    tr.dataset.run = r.id;
    tr.append(el("td", r.id), el("td", r.session || "?"), el("td", r.program || "?"), el("td", r.state));
    tr.addEventListener("click", () => { state.shownRun = r.id; renderOutput(); });
    return tr;
  }));
  renderOutput();
}

function renderOutput() {
  const r = state.runs.get(state.shownRun);
  if (!r) return $("run-output").replaceChildren();
  $("run-output").replaceChildren(el("div", "output of run " + r.id, "muted"), el("pre", r.output));
}

const decoder = new TextDecoder();
function onRun(kind, b) {
  const id = b.run;
  const r = state.runs.get(id) || { id, session: null, program: null, state: "", output: "" };
  state.runs.set(id, r);
  switch (kind) {
    case "RunRequested":
      r.session = b.session;
      r.program = [b.spec.program, ...b.spec.args].join(" ");
      r.state = "requested";
      break;
    case "RunStarted":
      r.state = "running (pid " + b.pid + ", attempt " + b.attempt + ")";
      break;
    case "RunOutput":
      r.output = (r.output + decoder.decode(new Uint8Array(b.bytes))).slice(-4096);
      break;
    case "RunExited": {
      const [how, n] = Object.entries(b.exit)[0];
      r.state = (how === "Code" ? "exited " + n : "killed by signal " + n) +
        " in " + b.duration_ms + " ms" + (b.retry ? ", retrying" : "");
      break;
    }
    case "RunSpawnFailed":
      r.state = "spawn failed: " + b.error + (b.retry ? ", retrying" : "");
      break;
    case "RunInterrupted":
      r.state = (b.cancelled ? "cancelled: " : "interrupted: ") + b.reason;
      break;
  }
  if (state.shownRun === null) state.shownRun = id;
  if (state.shownRun === id || kind !== "RunOutput") renderRuns();
}

function onEvent(v) {
  const [kind, body] = Object.entries(v.event.body)[0];
  const li = el("li");
  li.append(el("code", v.lsn), " ", el("strong", v.type), " ", el("span", v.sessions.join(", "), "muted"));
  $("events").prepend(li);
  trim($("events"));
  if (kind.startsWith("Run")) onRun(kind, body);
  if (v.type === "activity_recorded" && body.session === state.selected) {
    if (state.loading) {
      state.reload = true;
    } else {
      $("activity").prepend(activityLine({ action: body.action, timestamp: v.event.at, details: body.details }));
      trim($("activity"));
    }
  }
  if (state.live && v.sessions.length > 0) refreshSoon();
}

function onMessage(v) {
  if (typeof v.lsn === "number") {
    state.last = v.lsn;
    $("lsn").textContent = v.lsn;
  }
  if (v.type === "caught-up") {
    state.live = true;
    pill("stream", "live", "ok");
    refreshSoon();
  } else if (v.type === "error") {
    pill("stream", "error: " + v.error, "bad");
  } else if (v.event) {
    onEvent(v);
  }
}

function connect(from) {
  const url = new URL("/ws/sessions", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (from !== null) url.searchParams.set("from", String(from));
  const t = token();
  const ws = t ? new WebSocket(url, ["session-engine", "bearer." + b64url(t)]) : new WebSocket(url);
  state.socket = ws;
  ws.onopen = () => { state.retry = 500; pill("stream", "catching up", "wait"); };
  ws.onmessage = (m) => {
    let v;
    try { v = JSON.parse(m.data); } catch (_) { return; }
    onMessage(v);
  };
  ws.onclose = () => {
    state.live = false;
    pill("stream", "reconnecting", "bad");
    setTimeout(() => { health(); connect(state.last === null ? null : state.last + 1); }, state.retry);
    state.retry = Math.min(state.retry * 2, 10000);
  };
}

async function start() {
  const head = await health();
  loadSessions();
  connect(head === null ? null : Math.max(1, head - RECENT + 1));
  setInterval(health, 10000);
}

start();
