// hotline wallboard: queues, agents and rule breaches, live from the CTI API.
//
// The lists come from GET /api/v1/queues and /api/v1/agents (bearer token);
// the event stream (/api/v1/events) patches what it can at once and asks for
// the lists again, at most twice a second. Data reaches the page through
// textContent and class names only.
"use strict";

(() => {
  const TOKEN_KEY = "hotline.wallboard.token";
  const SL_GOAL = 0.8; // share of calls to answer within the queue's target
  const HOLD_LIMIT_MS = 30000; // a longer hold is a breach
  const MISSED_SHOWN_MS = 120000; // a ring-no-answer stays listed this long
  const FLASH_MS = 10000; // and its agent's tile flashes this long
  const FRESH_MS = 5000; // older events (a replay) only trigger a refresh
  const REFRESH_GAP_MS = 500; // at most two refreshes a second
  const REFRESH_EVERY_MS = 10000; // and one at least this often
  const RETRY_MAX_MS = 15000;
  const STATES = new Set([
    "logged-out", "ready", "not-ready", "offered", "talking", "on-hold", "wrap-up",
  ]);

  const state = {
    token: null,
    queues: [], // the last /queues answer
    agents: [], // the last /agents answer; each with `since`, local ms
    fetchedAt: 0,
    failed: null, // why the last refresh failed
    holds: new Map(), // call id -> {agent, since, limit, noted}
    breaks: new Map(), // agent id -> {reason, count, noted}
    missed: [], // {agent, queue, at}
    cursor: null, // of the last event received
    skew: 0, // the server's clock minus this one, ms (from HTTP Date)
    unreachable: false, // the server did not answer since the stream closed
    socket: null,
    retries: 0,
    retryAt: 0,
    retryTimer: null,
  };

  const $ = (id) => document.getElementById(id);

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setText(node, text) {
    const value = String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function setClass(node, className) {
    if (node.className !== className) node.className = className;
  }

  // Puts `node` at `index` among `parent`'s children, moving it only when
  // needed (a move would restart its animation).
  function place(parent, node, index) {
    const here = parent.children[index] || null;
    if (here !== node) parent.insertBefore(node, here);
  }

  function removeOthers(parent, keep) {
    for (const child of Array.from(parent.children)) {
      if (!keep.has(child)) child.remove();
    }
  }

  function count(value) {
    const n = Number(value);
    return Number.isFinite(n) ? n : 0;
  }

  function duration(ms) {
    const total = Math.max(0, Math.floor(count(ms) / 1000));
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = String(total % 60).padStart(2, "0");
    return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  }

  function clockTime(ms) {
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  function percent(ratio) {
    return typeof ratio === "number" && Number.isFinite(ratio)
      ? `${Math.round(ratio * 100)}%`
      : "—";
  }

  function levelClass(ratio) {
    if (typeof ratio !== "number" || !Number.isFinite(ratio)) return "";
    return ratio >= SL_GOAL ? "good" : "bad";
  }

  function storage(action) {
    try {
      return action(window.sessionStorage);
    } catch {
      return null;
    }
  }

  // --- Signing in -------------------------------------------------------

  // A `#token=...` in the address: taken, then removed from the address bar.
  function tokenFromFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const token = params.get("token");
    if (token === null) return null;
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
    return token.trim() || null;
  }

  function signIn(token) {
    stopStream();
    state.token = token;
    state.queues = [];
    state.agents = [];
    state.fetchedAt = 0;
    state.cursor = null;
    state.holds.clear();
    state.breaks.clear();
    state.missed = [];
    storage((s) => s.setItem(TOKEN_KEY, token));
    $("token").value = "";
    $("login").hidden = true;
    $("board").hidden = false;
    $("signout").hidden = false;
    render();
    refresh();
    connect();
  }

  function signOut(message) {
    stopStream();
    state.token = null;
    storage((s) => s.removeItem(TOKEN_KEY));
    $("board").hidden = true;
    $("signout").hidden = true;
    $("login").hidden = false;
    setText($("login-error"), message);
    setText($("updated"), "");
    setConnection("offline", "signed out");
    $("token").focus();
  }

  // --- The lists ----------------------------------------------------------

  let refreshTimer = null;
  let refreshing = false;
  let refreshAgain = false;
  let lastRefresh = 0;

  function scheduleRefresh() {
    if (!state.token || refreshTimer !== null) return;
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    const wait = Math.max(0, lastRefresh + REFRESH_GAP_MS - Date.now());
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      refresh();
    }, wait);
  }

  async function get(path, token) {
    const sent = Date.now();
    const response = await fetch(path, {
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
    });
    learnSkew(response.headers.get("date"), sent, Date.now());
    if (!response.ok) {
      const error = new Error(`HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return response.json();
  }

  // Event times are the server's: its Date header (whole seconds) tells how
  // far its clock is from this one; differences under a second are ignored.
  function learnSkew(date, sent, received) {
    const server = Date.parse(date || "");
    if (!Number.isFinite(server)) return;
    const skew = server + 500 - (sent + received) / 2;
    if (Math.abs(skew - state.skew) > 1000) state.skew = skew;
  }

  async function refresh() {
    const token = state.token;
    if (!token) return;
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    const asked = Date.now();
    lastRefresh = asked;
    try {
      const [queues, agents] = await Promise.all([
        get("/api/v1/queues", token),
        get("/api/v1/agents", token),
      ]);
      if (token !== state.token) return;
      const now = Date.now();
      state.queues = Array.isArray(queues) ? queues : [];
      state.agents = (Array.isArray(agents) ? agents : [])
        .map((a) => ({ ...a, id: String(a.id), since: now - count(a.in_state_ms) }))
        .sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
      state.fetchedAt = now;
      state.failed = null;
      forgetSettled(asked);
      render();
    } catch (error) {
      if (token !== state.token) return;
      if (error && error.status === 401) {
        signOut("The server refused this token.");
        return;
      }
      state.failed = error && error.message ? error.message : "no answer";
      // No answer at all (or a proxy's 5xx): the server may be restarting,
      // and a new one numbers its events from 0 again.
      if (!error || !error.status || error.status >= 500) state.unreachable = true;
      renderUpdated();
    } finally {
      refreshing = false;
      if (refreshAgain) {
        refreshAgain = false;
        scheduleRefresh();
      }
    }
  }

  // Drops holds and breaks that the lists, asked for at `asked`, show are over
  // (in case their ending event was missed).
  function forgetSettled(asked) {
    const byId = agentsById();
    for (const [call, hold] of state.holds) {
      const agent = byId.get(hold.agent);
      if (hold.noted < asked && agent && agent.state !== "on-hold") state.holds.delete(call);
    }
    for (const [id, pause] of state.breaks) {
      const agent = byId.get(id);
      if (pause.noted < asked && (!agent || agent.state !== "not-ready")) state.breaks.delete(id);
    }
  }

  function agentsById() {
    return new Map(state.agents.map((a) => [a.id, a]));
  }

  // --- The event stream ---------------------------------------------------

  function setConnection(kind, text) {
    const indicator = $("conn");
    if (indicator.dataset.state !== kind) indicator.dataset.state = kind;
    setText($("conn-text"), text);
  }

  function connect() {
    if (!state.token) return;
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    // The first connection replays the server's journal (recent breaches);
    // a reconnection asks for what came after the last event seen, unless
    // the server was gone meanwhile (a restarted one starts its count anew).
    const since = state.cursor === null || state.unreachable ? 0 : state.cursor;
    const url = `${scheme}//${location.host}/api/v1/events?token=${encodeURIComponent(state.token)}&since=${since}`;
    let socket;
    try {
      socket = new WebSocket(url);
    } catch {
      scheduleReconnect();
      return;
    }
    state.socket = socket;
    setConnection("connecting", "connecting…");
    socket.onopen = () => {
      state.retries = 0;
      state.unreachable = false;
      setConnection("live", "live");
      scheduleRefresh();
    };
    socket.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (event && typeof event === "object") onEvent(event);
    };
    socket.onclose = () => {
      if (state.socket !== socket) return;
      state.socket = null;
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (!state.token) return;
    const delay = Math.min(RETRY_MAX_MS, 1000 * 2 ** state.retries);
    state.retries = Math.min(state.retries + 1, 8);
    state.retryAt = Date.now() + delay;
    state.retryTimer = setTimeout(connect, delay);
    showRetry();
    scheduleRefresh();
  }

  function showRetry() {
    const left = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
    setConnection("offline", `offline, retrying in ${left} s`);
  }

  function stopStream() {
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    const socket = state.socket;
    state.socket = null;
    if (socket) {
      socket.onclose = null;
      socket.onmessage = null;
      socket.close();
    }
  }

  function onEvent(event) {
    if (Number.isSafeInteger(event.cursor)) state.cursor = event.cursor;
    const now = Date.now();
    const at = Number.isFinite(event.at) ? Math.min(event.at - state.skew, now) : now;
    const fresh = now - at < FRESH_MS;
    const agent = typeof event.agent === "string" ? event.agent : null;
    const call = typeof event.call_id === "string" ? event.call_id : null;
    switch (event.type) {
      case "agent_state_changed": {
        if (event.state !== "not-ready") state.breaks.delete(agent);
        const known = state.agents.find((a) => a.id === agent);
        if (fresh && known && typeof event.state === "string") {
          known.state = event.state;
          known.reason = typeof event.reason === "string" ? event.reason : null;
          known.since = now;
        }
        break;
      }
      case "hold_started":
        if (call) state.holds.set(call, { agent, since: at, limit: false, noted: now });
        break;
      case "hold_warning":
      case "hold_limit_reached":
        if (call) {
          const hold = state.holds.get(call) || { agent, since: now - count(event.held_ms) };
          hold.noted = now;
          if (event.type === "hold_limit_reached") hold.limit = true;
          state.holds.set(call, hold);
        }
        break;
      case "hold_ended":
      case "call_released":
      case "call_ended":
        if (call) state.holds.delete(call);
        break;
      case "offer_failed":
        if (event.outcome === "no_answer" && agent && now - at < MISSED_SHOWN_MS) {
          const queue = typeof event.queue === "string" ? event.queue : "";
          state.missed.push({ agent, queue, at });
          state.missed = state.missed.slice(-50);
        }
        break;
      case "break_over_limit":
        if (agent) {
          const reason = typeof event.reason === "string" ? event.reason : "";
          state.breaks.set(agent, { reason, count: count(event.count), noted: now });
        }
        break;
      case "staffing_below_minimum": {
        const queue = state.queues.find((q) => q.id === event.queue);
        if (fresh && queue) {
          queue.staffed = count(event.staffed);
          queue.min_staffed = count(event.min);
        }
        break;
      }
      default:
        break;
    }
    scheduleRefresh();
    scheduleRender();
  }

  // --- Drawing ------------------------------------------------------------

  let renderPending = false;

  function scheduleRender() {
    if (renderPending) return;
    renderPending = true;
    setTimeout(() => {
      renderPending = false;
      render();
    }, 50);
  }

  function render() {
    if (!state.token) return;
    const now = Date.now();
    state.missed = state.missed.filter((m) => now - m.at < MISSED_SHOWN_MS);
    const alerts = breaches(now);
    renderQueues(now);
    renderAgents(now, alerts);
    renderAlerts(alerts);
    renderUpdated();
  }

  function renderUpdated() {
    if (!state.token) return;
    let text = state.fetchedAt ? `updated ${clockTime(state.fetchedAt)}` : "loading…";
    if (state.failed) text = `update failed (${state.failed}); ${text}`;
    setText($("updated"), text);
  }

  const queueCards = new Map();

  function queueCard(id) {
    const known = queueCards.get(id);
    if (known) return known;
    const root = make("article", "queue");
    root.dataset.queue = id;
    const head = make("div", "queue-head");
    const paused = make("span", "badge", "paused");
    paused.hidden = true;
    head.append(make("h3", "", id), paused);
    const main = make("div", "queue-main");
    const waiting = make("span", "waiting num", "0");
    waiting.dataset.field = "waiting";
    main.append(waiting, make("span", "waiting-label", "waiting"));
    const figures = make("dl", "figures");
    const figure = (field, label) => {
      const box = make("div");
      const value = make("dd", "", "—");
      value.dataset.field = field;
      box.append(make("dt", "", label), value);
      figures.append(box);
      return value;
    };
    const card = {
      root,
      paused,
      waiting,
      longest: figure("longest", "Longest wait"),
      estimated: figure("estimated", "Est. wait"),
      staffed: figure("staffed", "Staffed / min"),
      sl15: figure("sl-15m", "SL 15 min"),
      slToday: figure("sl-today", "SL today"),
      answered: figure("answered", "Answered"),
      abandoned: figure("abandoned", "Abandoned"),
      foot: make("div", "queue-foot"),
    };
    root.append(head, main, figures, card.foot);
    queueCards.set(id, card);
    return card;
  }

  function renderQueues(now) {
    const container = $("queues");
    const keep = new Set();
    state.queues.forEach((q, index) => {
      const id = String(q.id);
      const card = queueCard(id);
      keep.add(card.root);
      place(container, card.root, index);
      const waiting = count(q.waiting);
      const staffed = count(q.staffed);
      const min = count(q.min_staffed);
      const short = staffed < min;
      setClass(card.root, `queue${short ? " understaffed" : ""}${q.paused ? " paused" : ""}`);
      card.paused.hidden = !q.paused;
      setText(card.waiting, waiting);
      setClass(card.waiting, `waiting num${waiting > 0 ? " busy" : ""}`);
      const longest = waiting > 0 ? count(q.longest_wait_ms) + (now - state.fetchedAt) : 0;
      setText(card.longest, duration(longest));
      setText(card.estimated, q.estimated_wait_ms == null ? "—" : duration(q.estimated_wait_ms));
      setText(card.staffed, `${staffed} / ${min}`);
      setClass(card.staffed, short ? "bad" : "");
      setText(card.sl15, percent(q.service_level_15m));
      setClass(card.sl15, levelClass(q.service_level_15m));
      setText(card.slToday, percent(q.service_level_today));
      setClass(card.slToday, levelClass(q.service_level_today));
      setText(card.answered, count(q.answered_today));
      setText(card.abandoned, count(q.abandoned_today));
      const states = Object.entries(q.agents && typeof q.agents === "object" ? q.agents : {})
        .filter(([, n]) => count(n) > 0)
        .map(([name, n]) => `${count(n)} ${name}`);
      const goal = `goal ${Math.round(SL_GOAL * 100)}% answered within ${count(q.service_level_target_s)} s`;
      setText(card.foot, states.length ? `${goal} · ${states.join(", ")}` : goal);
    });
    removeOthers(container, keep);
    for (const [id, card] of queueCards) {
      if (!keep.has(card.root)) queueCards.delete(id);
    }
    $("no-queues").hidden = !(state.fetchedAt && state.queues.length === 0);
  }

  const agentTiles = new Map();

  function agentTile(id) {
    const known = agentTiles.get(id);
    if (known) return known;
    const root = make("div", "tile");
    root.dataset.agent = id;
    const tile = {
      root,
      name: make("div", "tile-name"),
      id: make("div", "tile-id", id),
      state: make("div", "tile-state"),
      time: make("div", "tile-time num"),
      note: make("div", "tile-note"),
    };
    root.append(tile.name, tile.id, tile.state, tile.time, tile.note);
    agentTiles.set(id, tile);
    return tile;
  }

  function stateText(agent) {
    const words = String(agent.state).replace(/-/g, " ");
    return agent.reason ? `${words}: ${agent.reason}` : words;
  }

  function renderAgents(now, alerts) {
    const container = $("agents");
    const keep = new Set();
    const flagged = new Map();
    for (const alert of alerts) {
      if (alert.agent && !flagged.has(alert.agent)) flagged.set(alert.agent, alert);
    }
    state.agents.forEach((agent, index) => {
      const tile = agentTile(agent.id);
      keep.add(tile.root);
      place(container, tile.root, index);
      const known = STATES.has(agent.state) ? agent.state : "unknown";
      const alert = flagged.get(agent.id);
      const flash = state.missed.some((m) => m.agent === agent.id && now - m.at < FLASH_MS);
      let className = `tile state-${known}`;
      if (alert && alert.kind !== "no-answer") className += " breach";
      if (flash) className += " flash";
      setClass(tile.root, className);
      const name = agent.name ? String(agent.name) : agent.id;
      setText(tile.name, name);
      tile.id.hidden = name.includes(agent.id);
      setText(tile.state, stateText(agent));
      setText(tile.time, duration(now - agent.since));
      setText(tile.note, alert ? alert.label : "");
    });
    removeOthers(container, keep);
    for (const [id, tile] of agentTiles) {
      if (!keep.has(tile.root)) agentTiles.delete(id);
    }
  }

  function agentLabel(byId, id) {
    const agent = byId.get(id);
    const name = agent && agent.name ? String(agent.name) : "";
    return name && !name.includes(id) ? `${name} (${id})` : String(name || id);
  }

  // Every rule breach now, most urgent first.
  function breaches(now) {
    const byId = agentsById();
    const list = [];
    for (const q of state.queues) {
      const staffed = count(q.staffed);
      const min = count(q.min_staffed);
      if (staffed < min) {
        list.push({
          kind: "staffing",
          queue: String(q.id),
          label: "Staffing below minimum",
          text: `${q.id}: ${staffed} of ${min} staffed`,
          time: "",
          rank: 0,
          ms: 0,
        });
      }
    }
    // Holds: the agents list knows how long (without clock skew); the events
    // know holds over a shorter configured limit.
    const holds = new Map();
    for (const agent of state.agents) {
      if (agent.state === "on-hold") holds.set(agent.id, { ms: now - agent.since, limit: false });
    }
    for (const hold of state.holds.values()) {
      if (!hold.agent) continue;
      const known = holds.get(hold.agent);
      const listed = byId.get(hold.agent);
      if (listed && listed.state !== "on-hold" && !known) continue;
      const ms = known ? known.ms : now - hold.since;
      holds.set(hold.agent, { ms, limit: Boolean(hold.limit) || (known ? known.limit : false) });
    }
    for (const [agent, hold] of holds) {
      if (hold.ms >= HOLD_LIMIT_MS || hold.limit) {
        list.push({
          kind: "hold",
          agent,
          label: "Long hold",
          text: `${agentLabel(byId, agent)} has a caller on hold`,
          time: duration(hold.ms),
          rank: 1,
          ms: hold.ms,
        });
      }
    }
    for (const [agent, pause] of state.breaks) {
      const listed = byId.get(agent);
      const ms = listed ? now - listed.since : 0;
      list.push({
        kind: "break",
        agent,
        label: "Break over limit",
        text: `${agentLabel(byId, agent)}${pause.reason ? `: ${pause.reason}` : ""}`,
        time: listed ? duration(ms) : "",
        rank: 2,
        ms,
      });
    }
    const latest = new Map();
    for (const missed of state.missed) latest.set(missed.agent, missed);
    for (const [agent, missed] of latest) {
      list.push({
        kind: "no-answer",
        agent,
        label: "Ring, no answer",
        text: `${agentLabel(byId, agent)}${missed.queue ? ` missed a ${missed.queue} call` : ""}`,
        time: `${duration(now - missed.at)} ago`,
        rank: 3,
        ms: -(now - missed.at),
      });
    }
    return list.sort((a, b) => a.rank - b.rank || b.ms - a.ms);
  }

  function renderAlerts(alerts) {
    const container = $("alerts");
    const items = Array.from(container.children);
    alerts.forEach((alert, index) => {
      let item = items[index];
      if (!item) {
        item = make("li", "alert");
        item.append(make("span", "alert-kind"), make("span", "alert-text"), make("span", "alert-time"));
        container.append(item);
      }
      item.dataset.kind = alert.kind;
      item.dataset.subject = alert.agent || alert.queue || "";
      setText(item.children[0], alert.label);
      setText(item.children[1], alert.text);
      setText(item.children[2], alert.time);
      item.children[2].hidden = !alert.time;
    });
    for (const extra of items.slice(alerts.length)) extra.remove();
    $("no-alerts").hidden = alerts.length > 0;
  }

  function tick() {
    setText($("clock"), clockTime(Date.now()));
    if (!state.token) return;
    if (state.retryTimer !== null) showRetry();
    render();
  }

  function start() {
    $("login").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (token) signIn(token);
    });
    $("signout").addEventListener("click", () => signOut(""));
    window.addEventListener("hashchange", () => {
      const token = tokenFromFragment();
      if (token) signIn(token);
    });
    const token = tokenFromFragment() || storage((s) => s.getItem(TOKEN_KEY));
    if (token) signIn(token);
    else signOut("");
    setInterval(tick, 1000);
    setInterval(scheduleRefresh, REFRESH_EVERY_MS);
    tick();
  }

  start();
})();
