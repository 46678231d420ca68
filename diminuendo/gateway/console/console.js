// Diminuendo dev console: a small client of the /ws protocol (PROTOCOL.md §2–§7).
// Plain ES2020, no framework, no build step. Server data reaches the DOM only as text
// (el() appends strings as text nodes); innerHTML is never used.
"use strict";

const STALE_MS = 35000; // §6: silence for 35 s means the socket is stale
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;
const LOG_MAX = 500;

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "testid") node.dataset.testid = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child); // strings become text nodes
  }
  return node;
}

const clock = (ms) => new Date(ms || Date.now()).toLocaleTimeString();
const pretty = (value) => (typeof value === "string" ? value : JSON.stringify(value, null, 2));

// ---- state

const state = {
  ws: null,
  authenticated: false, // on the current socket (a later `authenticated` is a token refresh)
  backoff: BACKOFF_MIN_MS,
  reconnectTimer: null,
  lastHeard: 0,
  nextId: 1,
  pending: new Map(), // request id -> message type
  sessions: [],
  session: null, // {id, epoch, lastSeq, status, resume}
  turns: new Map(), // turnId -> TurnView
  userMessages: new Map(), // clientTurnId or request id -> user message element
  requests: new Map(), // question/permission requestId -> QuestionView
};

// ---- connection

function setConn(status, detail = "") {
  const node = $("conn-state");
  node.dataset.state = status;
  node.textContent = detail ? `${status} (${detail})` : status;
}

function connect() {
  clearTimeout(state.reconnectTimer);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws`, ["diminuendo.v1"]);
  state.ws = ws;
  state.authenticated = false;
  setConn("connecting");
  ws.onopen = () => {
    state.lastHeard = Date.now();
    setConn("open");
  };
  ws.onmessage = (event) => {
    state.lastHeard = Date.now();
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (err) {
      showError("client", `unparseable frame: ${err}`);
      return;
    }
    handle(frame);
  };
  ws.onclose = (event) => {
    if (state.ws === ws) dropped(`code ${event.code}`);
  };
}

function dropped(reason) {
  const ws = state.ws;
  state.ws = null;
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close(4000, "client reconnect");
  state.pending.clear();
  $("client-id").textContent = "–";
  const delay = Math.round(state.backoff * (0.75 + Math.random() * 0.5));
  state.backoff = Math.min(state.backoff * 2, BACKOFF_MAX_MS);
  setConn("closed", `${reason}; retry in ${(delay / 1000).toFixed(1)} s`);
  state.reconnectTimer = setTimeout(connect, delay);
}

setInterval(() => {
  if (state.ws && state.ws.readyState === WebSocket.OPEN && Date.now() - state.lastHeard > STALE_MS) {
    dropped("stale");
  }
}, 5000);

function send(type, fields = {}) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
    showError("client", `not connected: ${type} not sent`);
    return null;
  }
  const id = `c${state.nextId++}`;
  state.pending.set(id, type);
  state.ws.send(JSON.stringify({ ...fields, type, id }));
  return id;
}

// ---- tokens
// The console is served in dev mode only, where the gateway needs no token and identities never
// expire. Pointed at a gateway that does (PROTOCOL.md §3), it takes its token from a token
// source, asked again whenever the gateway says the current one is expiring: a function
// `window.diminuendoToken` (it may return a Promise), else sessionStorage "diminuendo.token".

async function currentToken() {
  const source = globalThis.diminuendoToken;
  if (typeof source === "function") return await source();
  if (typeof source === "string") return source;
  try {
    return sessionStorage.getItem("diminuendo.token");
  } catch (err) {
    return null; // storage disabled
  }
}

async function authenticate(missing) {
  let token;
  try {
    token = await currentToken();
  } catch (err) {
    showError("AUTH", `the token source failed: ${err}`);
    return;
  }
  if (token) send("authenticate", { token });
  else showError("AUTH", missing);
}

// ---- panels

function showError(code, message, extra = "") {
  const list = $("errors");
  list.append(el("li", { testid: "error-item", "data-code": code }, el("b", {}, code), ` ${message}`, extra));
  while (list.children.length > 50) list.firstChild.remove();
}

function logEvent(frame) {
  const log = $("event-log");
  const seq = typeof frame.seq === "number" ? frame.seq : null;
  const sticky = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.append(
    el(
      "li",
      { testid: "event-log-entry", "data-seq": seq ?? "", "data-type": frame.type || "" },
      el("span", { class: "seq" }, seq === null ? "·" : `#${seq}`),
      ` ${frame.type || "?"}`,
      frame.id ? el("span", { class: "dim" }, ` id=${frame.id}`) : null,
    ),
  );
  while (log.children.length > LOG_MAX) log.firstChild.remove();
  if (sticky) log.scrollTop = log.scrollHeight;
}

function renderSessionBar() {
  const s = state.session;
  const current = $("current-session");
  current.textContent = s ? `${s.name || "(unnamed)"} · ${s.agentType || "?"} · ${s.id}` : "no session joined";
  current.dataset.sessionId = s ? s.id : "";
  $("session-state").textContent = s?.status || "–";
  $("session-epoch").textContent = s?.epoch || "–";
  $("session-seq").textContent = String(s?.lastSeq ?? 0);
  const busy = s && (s.status === "running" || s.status === "waiting");
  $("stop-turn").disabled = !busy;
  $("run-turn").disabled = !s;
}

function renderSessions() {
  const list = $("session-list");
  list.replaceChildren();
  for (const meta of state.sessions) {
    const current = state.session?.id === meta.id;
    list.append(
      el(
        "li",
        { testid: "session-item", class: current ? "current" : "", "data-session-id": meta.id, "data-current": current },
        el("div", { class: "name" }, meta.name || "(unnamed)"),
        el("div", { class: "dim" }, `${meta.agentType} · ${meta.status}${meta.archived ? " · archived" : ""}`),
        el("button", { type: "button", testid: "join-session", onclick: () => join(meta.id) }, current ? "Rejoin" : "Join"),
      ),
    );
  }
}

function requestSessions() {
  send("list_sessions");
}

// ---- sessions and replay (§7)

function join(sessionId) {
  if (state.session && state.session.id !== sessionId) {
    send("leave_session", { sessionId: state.session.id });
  }
  const meta = state.sessions.find((m) => m.id === sessionId) || {};
  state.session = { id: sessionId, epoch: null, lastSeq: 0, status: meta.status, name: meta.name, agentType: meta.agentType, resume: false };
  resetTranscript();
  send("get_history", { sessionId, limit: 100 });
  send("join_session", { sessionId }); // live from now on; history covers the past
  renderSessionBar();
  renderSessions();
}

function rejoin() {
  const s = state.session;
  s.resume = true;
  // The recipe after a drop: resume after the last seq seen, in the epoch it belongs to.
  const fields = { sessionId: s.id };
  if (s.epoch) Object.assign(fields, { afterSeq: s.lastSeq, epoch: s.epoch });
  send("join_session", fields);
}

function onSnapshot(frame) {
  const s = state.session;
  if (!s || s.id !== frame.sessionId) return;
  const epochChanged = s.epoch !== null && s.epoch !== frame.epoch;
  Object.assign(s, { status: frame.session?.status, name: frame.session?.name, agentType: frame.session?.agentType });
  if (!s.resume || epochChanged) s.lastSeq = frame.lastSeq; // otherwise the replay follows
  s.epoch = frame.epoch;
  if (s.resume && frame.gap) {
    resetTranscript();
    transcriptNote("Missed events are gone (gap): rebuilt from history.");
    send("get_history", { sessionId: s.id, limit: 100 });
  }
  if (frame.currentTurn && !state.turns.has(frame.currentTurn.turnId)) {
    turnView(frame.currentTurn.turnId).text(frame.currentTurn.text || "");
  }
  for (const request of frame.pending || []) {
    if (!state.requests.has(request.requestId)) showRequest(request);
  }
  renderSessionBar();
}

function onHistory(frame) {
  if (frame.sessionId !== state.session?.id) return;
  const items = [];
  if (frame.hasMore) items.push(el("div", { class: "note" }, "Older messages not shown."));
  for (const message of frame.messages || []) {
    if (message.role === "user") {
      items.push(userMessage(message.text, message.turnId));
    } else if (!state.turns.has(message.turnId)) {
      const box = el("div", { testid: "msg-assistant", class: "msg assistant", "data-turn-id": message.turnId, "data-source": "history" });
      for (const call of message.toolCalls || []) box.append(toolBlock(call.toolCallId, call.toolName, pretty(call.args), pretty(call.output)));
      box.append(el("div", { testid: "assistant-text", class: "text" }, message.text || ""));
      items.push(box);
    }
  }
  $("transcript").prepend(...items); // before anything live that arrived meanwhile
}

// ---- transcript

function resetTranscript() {
  $("transcript").replaceChildren();
  state.turns.clear();
  state.requests.clear();
  state.userMessages.clear();
  $("usage").textContent = "";
}

function appendToTranscript(node) {
  const box = $("transcript");
  const sticky = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
  box.append(node);
  if (sticky) box.scrollTop = box.scrollHeight;
}

function transcriptNote(text) {
  appendToTranscript(el("div", { class: "note" }, text));
}

function userMessage(text, turnId) {
  return el("div", { testid: "msg-user", class: "msg user", "data-turn-id": turnId }, text);
}

function toolBlock(toolCallId, toolName, args, output) {
  const view = el(
    "div",
    { testid: "tool-call", class: "tool", "data-tool-call-id": toolCallId, "data-status": output === undefined ? "streaming" : "done" },
    el("div", {}, "tool ", el("b", { testid: "tool-name" }, toolName || "?")),
    el("pre", { testid: "tool-args", class: "args" }, args || ""),
  );
  if (output !== undefined) view.append(el("pre", { testid: "tool-result", class: "result" }, output));
  return view;
}

class TurnView {
  constructor(turnId) {
    this.turnId = turnId;
    this.status = el("span", { testid: "turn-status", class: "turn-status", "data-status": "running" }, "running");
    this.body = el("div", { class: "body" });
    this.root = el(
      "div",
      { testid: "msg-assistant", class: "msg assistant", "data-turn-id": turnId },
      el("div", { class: "turn-head dim" }, `turn ${turnId} · `, this.status),
      this.body,
    );
    this.textNode = null; // the text block that deltas currently extend
    this.thinking = null;
    this.plan = null;
    this.tools = new Map();
    this.terminals = new Map();
    appendToTranscript(this.root);
  }

  add(node) {
    this.textNode = null; // text after this block starts a new paragraph
    this.body.append(node);
    return node;
  }

  text(delta) {
    if (!delta) return;
    if (!this.textNode) {
      this.textNode = el("div", { testid: "assistant-text", class: "text" });
      this.body.append(this.textNode);
    }
    this.textNode.append(delta);
  }

  thinkingStart() {
    this.thinking = el("div", { testid: "thinking-text" });
    this.add(el("details", { testid: "thinking", class: "thinking", "data-status": "thinking" }, el("summary", {}, "Thinking…"), this.thinking));
  }

  thinkingProgress(text) {
    if (!this.thinking) this.thinkingStart();
    this.thinking.append(text);
  }

  thinkingComplete() {
    if (!this.thinking) return;
    const box = this.thinking.parentElement;
    box.dataset.status = "complete";
    box.querySelector("summary").textContent = "Thought";
    this.thinking = null;
  }

  setPlan(steps) {
    const old = new Map();
    if (this.plan) for (const li of this.plan.children) old.set(li.dataset.stepId, li.dataset.status);
    const list = el("ol", { testid: "plan", class: "plan" });
    for (const step of steps || []) {
      const id = String(step.id ?? "");
      const li = el("li", { testid: "plan-step", "data-step-id": id, "data-status": old.get(id) || "pending" }, step.title || step.text || id);
      list.append(li);
    }
    if (this.plan) this.plan.replaceWith(list);
    else this.add(list);
    this.plan = list;
  }

  planStep(stepId, status) {
    for (const li of this.plan?.children || []) if (li.dataset.stepId === String(stepId)) li.dataset.status = status;
  }

  tool(toolCallId, toolName) {
    let view = this.tools.get(toolCallId);
    if (!view) {
      view = this.add(toolBlock(toolCallId, toolName, ""));
      this.tools.set(toolCallId, view);
    }
    if (toolName) view.querySelector('[data-testid="tool-name"]').textContent = toolName;
    return view;
  }

  toolArgs(toolCallId, delta, final) {
    const args = this.tool(toolCallId).querySelector('[data-testid="tool-args"]');
    if (final === undefined) args.append(delta || "");
    else args.textContent = pretty(final);
  }

  toolEnd(toolCallId, testid, text, status) {
    const view = this.tool(toolCallId);
    view.dataset.status = status;
    view.append(el("pre", { testid, class: testid === "tool-error" ? "result error" : "result" }, text));
  }

  terminal(terminalId, data) {
    const key = terminalId || "terminal";
    let term = this.terminals.get(key);
    if (!term) {
      term = this.add(el("pre", { testid: "terminal", class: "terminal", "data-terminal-id": key }));
      this.terminals.set(key, term);
    }
    if (data) term.append(data);
    return term;
  }

  note(testid, text, cls = "note") {
    return this.add(el("div", { testid, class: cls }, text));
  }

  finish(status, label) {
    this.status.dataset.status = status;
    this.status.textContent = label;
  }
}

function turnView(turnId) {
  let view = state.turns.get(turnId);
  if (!view) {
    view = new TurnView(turnId);
    state.turns.set(turnId, view);
  }
  return view;
}

// ---- questions and permissions

function showRequest(frame) {
  const s = state.session;
  const requestId = frame.requestId;
  const box = el("div", { testid: "question", class: "question", "data-request-id": requestId, "data-kind": frame.type, "data-status": "open" });
  const answers = {};
  const controls = [];
  const answer = (fields) => {
    for (const control of controls) control.disabled = true;
    box.dataset.status = "answering";
    send("answer_question", { sessionId: s.id, requestId, ...fields });
  };
  const control = (node) => {
    controls.push(node);
    return node;
  };

  if (frame.type === "permission_requested") {
    box.append(
      el("div", { testid: "question-text" }, `Allow ${frame.toolName || "tool"}? ${frame.description || ""}`),
      el(
        "div",
        { class: "options" },
        control(el("button", { type: "button", testid: "question-approve", onclick: () => answer({ approved: true }) }, "Approve")),
        control(el("button", { type: "button", testid: "question-deny", onclick: () => answer({ approved: false }) }, "Deny")),
      ),
    );
  } else {
    const questions = frame.questions || [];
    const single = questions.length === 1;
    for (const q of questions) {
      const options = el("div", { class: "options" });
      for (const option of q.options || []) {
        const label = typeof option === "string" ? option : option.label ?? option.value ?? pretty(option);
        const value = typeof option === "string" ? option : option.value ?? label;
        const button = control(el("button", { type: "button", testid: "question-option", "data-value": label }, label));
        button.addEventListener("click", () => {
          answers[q.id] = value;
          for (const other of options.children) other.classList.toggle("chosen", other === button);
          if (single) answer({ answers });
        });
        options.append(button);
      }
      const input = control(el("input", { testid: "question-free-text", placeholder: "or type an answer", "data-question-id": q.id }));
      input.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && input.value.trim()) {
          answers[q.id] = input.value.trim();
          if (single) answer({ answers });
        }
      });
      box.append(el("div", { testid: "question-item", class: "q", "data-question-id": q.id }, el("div", { testid: "question-text" }, q.text || ""), options, input));
    }
    const submit = () => {
      for (const input of box.querySelectorAll('[data-testid="question-free-text"]')) {
        if (input.value.trim() && !(input.dataset.questionId in answers)) answers[input.dataset.questionId] = input.value.trim();
      }
      answer({ answers });
    };
    box.append(el("div", { class: "options" }, control(el("button", { type: "button", testid: "question-submit", onclick: submit }, "Answer"))));
  }
  box.lastChild.append(control(el("button", { type: "button", testid: "question-dismiss", onclick: () => answer({ dismissed: true }) }, "Dismiss")));
  const view = { box, controls };
  state.requests.set(requestId, view);
  if (frame.turnId) turnView(frame.turnId).add(box);
  else appendToTranscript(box);
}

function resolveRequest(frame) {
  const view = state.requests.get(frame.requestId);
  if (!view) return;
  for (const control of view.controls) control.disabled = true;
  view.box.dataset.status = "resolved";
  let text;
  if (frame.dismissed) text = "dismissed";
  else if (frame.answers && Object.keys(frame.answers).length) {
    text = "answered: " + Object.entries(frame.answers).map(([k, v]) => `${k} = ${pretty(v)}`).join(", ");
  } else text = frame.approved === false ? "denied" : "approved";
  view.box.append(el("div", { testid: "question-resolution", class: "resolution" }, `✓ ${text}`));
}

// ---- frames

function handle(frame) {
  const requestType = frame.id ? state.pending.get(frame.id) : undefined;
  if (frame.id) state.pending.delete(frame.id);
  if (frame.type !== "heartbeat" && frame.type !== "pong") logEvent(frame);

  const s = state.session;
  const ours = s && frame.sessionId === s.id;
  if (ours && typeof frame.seq === "number") {
    s.lastSeq = frame.seq;
    $("session-seq").textContent = String(s.lastSeq);
  }
  if (frame.sessionId && typeof frame.seq === "number" && !ours) return; // a session we left

  const turn = () => turnView(frame.turnId || "(unknown turn)");
  switch (frame.type) {
    case "welcome":
      if (frame.requiresAuth) authenticate('This gateway requires a token: set window.diminuendoToken or sessionStorage "diminuendo.token".');
      break;
    case "auth_expiring":
      authenticate(`The token expires at ${clock(frame.expiresAt)} and there is no token source to refresh it.`);
      break;
    case "connected":
      $("client-id").textContent = frame.clientId;
      break;
    case "authenticated":
      state.backoff = BACKOFF_MIN_MS;
      $("identity").textContent = `${frame.identity?.userId} (${frame.identity?.role}, tenant ${frame.identity?.tenantId})`;
      if (state.authenticated) break; // a refreshed token: the socket and its joins stay
      state.authenticated = true;
      requestSessions();
      if (state.session) rejoin();
      break;
    case "heartbeat":
      $("heartbeat").textContent = `heartbeat ${clock(frame.ts)}`;
      $("heartbeat").dataset.ts = frame.ts;
      break;
    case "session_list":
      state.sessions = frame.sessions || [];
      renderSessions();
      break;
    case "session_created":
      if (requestType === "create_session") join(frame.session.id);
      requestSessions();
      break;
    case "session_updated":
    case "session_archived":
    case "session_unarchived":
      requestSessions();
      break;
    case "session_deleted":
      if (frame.sessionId === s?.id) {
        state.session = null;
        resetTranscript();
        renderSessionBar();
      }
      requestSessions();
      break;
    case "state_snapshot":
      onSnapshot(frame);
      break;
    case "history":
      onHistory(frame);
      break;
    case "session_state":
      if (!ours) break;
      s.status = frame.state;
      renderSessionBar();
      break;
    case "turn_started": {
      const view = turn();
      const user = state.userMessages.get(frame.clientTurnId);
      if (user) {
        user.dataset.turnId = frame.turnId;
        view.root.before(user); // keep the question above its answer
      }
      break;
    }
    case "text_delta":
      turn().text(frame.text);
      break;
    case "thinking.start":
      turn().thinkingStart();
      break;
    case "thinking.progress":
      turn().thinkingProgress(frame.text || "");
      break;
    case "thinking.complete":
      turn().thinkingComplete();
      break;
    case "plan.created":
    case "plan.revised":
      turn().setPlan(frame.steps);
      break;
    case "plan.step_started":
      turn().planStep(frame.stepId, "running");
      break;
    case "plan.step_completed":
      turn().planStep(frame.stepId, "done");
      break;
    case "tool_call_start":
      turn().tool(frame.toolCallId, frame.toolName);
      break;
    case "tool_call_delta":
      turn().toolArgs(frame.toolCallId, frame.argsDelta);
      break;
    case "tool_call":
      turn().tool(frame.toolCallId, frame.toolName);
      turn().toolArgs(frame.toolCallId, null, frame.args ?? {});
      break;
    case "tool_result":
      turn().toolEnd(frame.toolCallId, frame.isError ? "tool-error" : "tool-result", pretty(frame.output ?? ""), frame.isError ? "error" : "done");
      break;
    case "tool_error":
      turn().toolEnd(frame.toolCallId, "tool-error", frame.message || "tool error", "error");
      break;
    case "terminal.stream":
      turn().terminal(frame.terminalId, frame.data);
      break;
    case "terminal.complete":
      turn().terminal(frame.terminalId).after(el("div", { testid: "terminal-exit", class: "dim" }, `exit code ${frame.exitCode ?? "?"}`));
      break;
    case "file_changed":
      turn().note("file-changed", `file changed: ${frame.path}${frame.iteration !== undefined ? ` (iteration ${frame.iteration})` : ""}`);
      break;
    case "sandbox.provisioning":
    case "sandbox.init":
    case "sandbox.removed":
      turn().note("sandbox", frame.type, "note dim");
      break;
    case "usage_update": {
      const cost = frame.cost !== undefined ? `, cost ${frame.cost}` : "";
      const text = `usage: ${frame.inputTokens ?? 0} in / ${frame.outputTokens ?? 0} out${cost}`;
      turn().note("turn-usage", text, "note dim");
      $("usage").textContent = text;
      break;
    }
    case "question_requested":
    case "permission_requested":
      if (!state.requests.has(frame.requestId)) showRequest(frame);
      break;
    case "approval_resolved":
      resolveRequest(frame);
      break;
    case "turn_complete":
      turn().finish(frame.stopReason || "end_turn", `complete (${frame.stopReason || "end_turn"})`);
      break;
    case "turn_error":
      turn().note("turn-error", `${frame.code}: ${frame.message}`, "note error");
      turn().finish("error", "error");
      break;
    case "error": {
      showError(frame.code, frame.message, frame.id ? ` (${requestType || "request"} ${frame.id})` : "");
      const user = frame.id && state.userMessages.get(frame.id);
      if (user) user.dataset.status = "failed";
      break;
    }
    default:
      break; // ack, pong, and anything newer than this page
  }
}

// ---- controls

function runTurn() {
  const input = $("turn-input");
  const text = input.value;
  const s = state.session;
  if (!s || !text.trim()) return;
  const clientTurnId = `ct_${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  const user = userMessage(text);
  const id = send("run_turn", { sessionId: s.id, text, clientTurnId });
  if (!id) return;
  state.userMessages.set(clientTurnId, user);
  state.userMessages.set(id, user);
  appendToTranscript(user);
  input.value = "";
}

document.addEventListener("DOMContentLoaded", () => {
  $("create-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("session-name").value.trim();
    send("create_session", { agentType: $("agent-type").value, ...(name ? { name } : {}) });
    $("session-name").value = "";
  });
  $("refresh-sessions").addEventListener("click", requestSessions);
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    runTurn();
  });
  $("turn-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      runTurn();
    }
  });
  $("stop-turn").addEventListener("click", () => state.session && send("stop_turn", { sessionId: state.session.id }));
  $("reconnect").addEventListener("click", () => {
    state.backoff = BACKOFF_MIN_MS;
    if (state.ws) dropped("dropped by you");
    else connect();
  });
  renderSessionBar();
  connect();
});
