// Switchboard chat: one session stream (SSE read with fetch, so it carries the
// Authorization header and the token never lands in a URL), rendered as messages,
// streamed drafts and live task cards. Entries are applied once each by offset; after
// a drop the stream resumes from the next offset. Sign-in is auth.js (`Auth`).
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = {
  me: null,           // GET /v1/me: who is signed in and what they may do
  session: null,
  next: 0,            // the next entry offset to apply
  drafts: new Map(),  // "turn/step" -> {el, seq}
  finished: new Set(),
  tasks: new Map(),   // task id -> {status, el}
  controller: null,
  retry: 0,
};

// Controls shown, not sent (as switchboard/text.py): escape sequences, carriage returns
// and bidi overrides in text a subagent wrote become visible stand-ins; \n and \t stay.
const INVISIBLE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060\u2066-\u2069\ufeff]/g;
function visible(text) {
  return String(text).replace(INVISIBLE, (c) => {
    const code = c.charCodeAt(0);
    if (code < 0x20) return String.fromCharCode(0x2400 + code);
    if (code === 0x7f) return "\u2421";
    if (code < 0xa0) return "\\x" + code.toString(16);
    return "<U+" + code.toString(16).toUpperCase().padStart(4, "0") + ">";
  });
}

async function api(method, path, body) {
  const extra = body ? { "Content-Type": "application/json" } : {};
  const init = { method, headers: Auth.headers(extra) };
  if (body) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (response.status === 401) signInAgain((data && data.detail) || "sign in again");
  if (!response.ok) {
    const error = new Error((data && data.detail) || response.statusText);
    error.status = response.status;
    throw error;
  }
  return data;
}

// ---- signing in ---------------------------------------------------------------------

function showSignIn(message) {
  $("#app").hidden = true;
  $("#signin").hidden = false;
  $("#signin-message").textContent = message || "";
  $("#token-form").hidden = Auth.mode !== "token";
  $("#oidc-signin").hidden = Auth.mode !== "oidc";
  if (Auth.mode === "token") $("#token").focus();
}

// The token was refused (expired, revoked): stop everything and ask again.
function signInAgain(detail) {
  if (state.controller) state.controller.abort();
  state.controller = null;
  Auth.forget();
  const why = Auth.mode === "none" ? detail : `Signed out: ${detail}`;
  showSignIn(why);
}

function signedIn(me) {
  state.me = me;
  $("#signin").hidden = true;
  $("#app").hidden = false;
  const roles = me.roles.length ? me.roles.join(", ") : "no role";
  $("#who").textContent = me.via === "local" ? "" : `${me.name} · ${me.tenant} · ${roles}`;
  $("#sign-out").hidden = me.via === "local";
}

// ---- the stream ---------------------------------------------------------------------

function setConnection(text, cls) {
  const el = $("#connection");
  el.textContent = text;
  el.className = "dot " + (cls || "");
}

async function connect() {
  if (!state.session) return;
  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;
  setConnection("connecting", "connecting");
  try {
    const response = await fetch(
      `/v1/sessions/${state.session}/events?from=${state.next}`,
      { headers: Auth.headers({ Accept: "text/event-stream" }), signal: controller.signal },
    );
    if (response.status === 404) {
      setConnection("no such session", "");
      return;
    }
    if (response.status === 401) {
      const body = await response.json().catch(() => ({}));
      setConnection("signed out", "");
      signInAgain(body.detail || "sign in again");
      return;
    }
    if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
    await readEvents(response.body.getReader());
  } catch (error) {
    if (controller.signal.aborted) return;
  }
  if (controller.signal.aborted) return;
  // The stream ended (network drop, gateway restart): resume from the next offset.
  setConnection("reconnecting", "connecting");
  const delay = Math.min(5000, 250 * 2 ** state.retry++);
  setTimeout(() => { if (state.controller === controller) connect(); }, delay);
}

async function readEvents(reader) {
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      let event = "message";
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) handle(event, JSON.parse(data.join("\n")));
    }
  }
}

function handle(event, data) {
  if (event === "entry") return applyEntry(data);
  if (event === "token") return applyToken(data);
  if (event === "draft") return applyDraft(data);
  if (event === "task") return applyTask(data);
  if (event === "turn") { $("#thinking").hidden = !data.running; return; }
  if (event === "ready") { state.retry = 0; setConnection("live", "live"); return; }
  if (event === "error") addLine("system", `stream: ${data.detail}`);
}

// ---- messages -----------------------------------------------------------------------

function scrollDown() {
  const pane = $("#messages");
  pane.scrollTop = pane.scrollHeight;
}

function addLine(kind, text, extra = "") {
  const el = document.createElement("div");
  el.className = `msg ${kind} ${extra}`.trim();
  el.textContent = visible(text);
  $("#messages").appendChild(el);
  scrollDown();
  return el;
}

function applyEntry(entry) {
  if (entry.offset < state.next) return; // seen before the reconnect
  state.next = entry.offset + 1;
  if (entry.kind === "gap") return addLine("system", entry.content);
  if (entry.kind === "task_event") {
    const el = addLine("system", "", `event-${entry.event}`);
    el.dataset.task = entry.task_id;
    el.dataset.event = entry.event;
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = `${entry.task_id.slice(0, 13)}… ${entry.event.replace(/_/g, " ")}`;
    el.append(tag, visible(entry.content));
    if (entry.phase) mergeTask(entry.task_id, { phase: entry.phase });
    return;
  }
  if (entry.kind === "notice") return addLine("system", entry.content);
  if (entry.role === "user") return addLine("user", entry.content);
  if (entry.role === "tool") {
    const el = addLine("tool", `${entry.tool_name}: ${entry.content}`, entry.is_error ? "error" : "");
    if (entry.data && entry.data.started_task) mergeTask(entry.task_id, entry.data.started_task);
    return el;
  }
  if (entry.role === "assistant") {
    const key = `${entry.turn}/${entry.step}`;
    state.finished.add(key);
    const draft = state.drafts.get(key);
    state.drafts.delete(key);
    if (!entry.content) { if (draft) draft.el.remove(); return; }
    if (draft) {
      draft.el.textContent = visible(entry.content);
      draft.el.classList.remove("draft");
      return;
    }
    return addLine("assistant", entry.content);
  }
}

function applyToken(token) {
  const key = `${token.turn}/${token.step}`;
  if (state.finished.has(key)) return;
  let draft = state.drafts.get(key);
  if (!draft || token.seq === 0) {
    if (draft) draft.el.remove();
    draft = { el: addLine("assistant", "", "draft"), seq: -1 };
    state.drafts.set(key, draft);
  }
  if (token.seq !== draft.seq + 1) return; // out of step: the next draft event fixes it
  draft.el.textContent += visible(token.text);
  draft.seq = token.seq;
  scrollDown();
}

function applyDraft(draft) {
  const key = `${draft.turn}/${draft.step}`;
  if (state.finished.has(key)) return;
  let known = state.drafts.get(key);
  if (!known) {
    known = { el: addLine("assistant", "", "draft"), seq: -1 };
    state.drafts.set(key, known);
  }
  known.el.textContent = visible(draft.text);
  known.seq = draft.seq;
}

// ---- tasks --------------------------------------------------------------------------

function mergeTask(id, fields) {
  const known = state.tasks.get(id) || { status: { task_id: id, subagents: [] } };
  known.status = { ...known.status, ...fields, task_id: id };
  state.tasks.set(id, known);
  renderTask(id);
}

function applyTask(update) {
  if (update.status) mergeTask(update.task_id, update.status);
  else if (!state.tasks.has(update.task_id)) mergeTask(update.task_id, {});
}

function elapsed(status) {
  if (!status.created_at) return "";
  const start = Date.parse(status.created_at);
  const final = ["completed", "rejected", "cancelled", "failed"].includes(status.phase);
  const end = final && status.updated_at ? Date.parse(status.updated_at) : Date.now();
  const seconds = Math.max(0, Math.round((end - start) / 1000));
  return seconds < 120 ? `${seconds}s` : `${Math.round(seconds / 60)}m`;
}

function metaText(status) {
  const subagents = status.subagents || [];
  const tokens = subagents.reduce((sum, s) => sum + (s.tokens || 0), 0);
  return `${subagents.length} subagents · ${tokens} tokens · ${elapsed(status)}`
    + (status.round > 1 ? ` · round ${status.round}` : "");
}

function renderTask(id) {
  const task = state.tasks.get(id);
  const status = task.status;
  $("#no-tasks").hidden = true;
  if (!task.el) {
    task.el = document.createElement("div");
    task.el.className = "task-card";
    task.el.dataset.task = id;
    $("#tasks").prepend(task.el);
  }
  const subagents = status.subagents || [];
  const phase = status.phase || "preparing";
  task.el.dataset.phase = phase;
  task.el.innerHTML = "";
  const head = document.createElement("div");
  head.className = "head";
  head.innerHTML = `<span class="id"></span><span class="phase ${phase}"></span>`;
  head.querySelector(".id").textContent = id;
  head.querySelector(".phase").textContent = phase.replace(/_/g, " ");
  const goal = document.createElement("div");
  goal.className = "goal";
  goal.textContent = visible(status.goal || "");
  const meta = document.createElement("div");
  meta.className = "meta";
  task.meta = meta;
  meta.textContent = metaText(status);
  const list = document.createElement("ul");
  list.className = "subagents";
  for (const sub of subagents) {
    const item = document.createElement("li");
    item.className = `state-${sub.state}`;
    const done = ["done", "failed", "cancelled", "budget_exhausted"].includes(sub.state);
    const width = done ? 100 : Math.min(95, (sub.steps || 0) * 15);
    item.innerHTML = `<span class="role"></span><span class="title"></span><span class="meta"></span>`
      + `<div class="bar"><span style="width:${width}%"></span></div>`;
    item.querySelector(".role").textContent = sub.role;
    item.querySelector(".title").textContent = visible(sub.title);
    item.querySelector(".meta").textContent = `${sub.state} · ${sub.steps} steps · ${sub.tokens} tok`;
    const last = (sub.tools || [])[(sub.tools || []).length - 1];
    if (last) item.appendChild(toolLine(last));
    if (sub.state === "failed" && sub.error) {
      const why = document.createElement("div");
      why.className = "sub-error";
      why.textContent = visible(clip(sub.error, 300));
      item.appendChild(why);
    }
    list.appendChild(item);
  }
  const parts = [head, goal, meta, list];
  const target = status.target;
  if (target && target.behind) {
    const line = document.createElement("div");
    line.className = target.conflicts && target.conflicts.length ? "target conflict" : "target";
    line.textContent = `target: ${visible(target.message)}`;
    parts.push(line);
  }
  task.feedback = task.feedback || document.createElement("input");
  task.el.append(...parts, actions(id, phase, task.feedback, target));
}

// A subagent's last tool call: how it ended and a bounded excerpt of its output
// (hostile text: shown as text, control characters made visible, clipped).
function toolLine(used) {
  const line = document.createElement("div");
  line.className = used.ok ? "last-tool ok" : "last-tool failed";
  const how = used.ok ? "ok" : `failed (${used.limit || (used.exit_code ?? "error")})`;
  const excerpt = visible(clip((used.excerpt || "").replace(/\s+/g, " ").trim(), 240));
  line.textContent = `${used.tool} ${how}` + (excerpt ? `: ${excerpt}` : "");
  return line;
}

function clip(text, limit) {
  return text.length > limit ? `${text.slice(0, limit)}…` : text;
}

function actions(id, phase, feedback, target) {
  const box = document.createElement("div");
  box.className = "actions";
  const button = (label, cls, onClick, enabled = true) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = cls;
    b.textContent = label;
    b.disabled = !enabled;
    b.addEventListener("click", onClick);
    box.appendChild(b);
    return b;
  };
  const deciding = phase === "awaiting_approval";
  const live = !["completed", "rejected", "cancelled", "failed"].includes(phase);
  feedback.placeholder = "feedback for changes";
  feedback.className = "feedback";
  // Only an approver gets the decision buttons (the API refuses anyone else anyway).
  const mayDecide = Boolean(state.me && state.me.can.decide);
  if (mayDecide) {
    button("Approve", "approve", () => decide(id, "approve", {}), deciding);
    button("Request changes", "request-changes", () => {
      const text = feedback.value.trim();
      if (!text) { feedback.focus(); return; }
      decide(id, "request-changes", { feedback: text });
    }, deciding);
    if (deciding && target && target.behind && !(target.conflicts || []).length) {
      button("Rebase", "rebase", () => decide(id, "request-changes", { rebase: true }));
    }
    button("Reject", "reject", () => decide(id, "reject", {}), deciding);
  }
  button("Cancel", "cancel", () => decide(id, "cancel", null), live);
  button("Diff", "show-diff", () => showDiff(id));
  if (deciding && mayDecide) box.appendChild(feedback);
  else if (deciding) {
    const note = document.createElement("span");
    note.className = "muted awaiting-approver";
    note.textContent = "waiting for an approver";
    box.appendChild(note);
  }
  return box;
}

async function decide(id, action, body) {
  try {
    await api("POST", `/v1/tasks/${id}/${action}`, body || undefined);
  } catch (error) {
    addLine("system", `${action} ${id}: ${error.message}`);
  }
}

async function showDiff(id) {
  const pane = $("#diff");
  pane.hidden = false;
  $("#diff-title").textContent = id;
  const body = $("#diff-body");
  body.textContent = "loading…";
  try {
    const diff = await api("GET", `/v1/tasks/${id}/diff`);
    body.innerHTML = "";
    for (const line of diff.patch.split("\n")) {
      const span = document.createElement("span");
      if (line.startsWith("+") && !line.startsWith("+++")) span.className = "add";
      else if (line.startsWith("-") && !line.startsWith("---")) span.className = "del";
      else if (line.startsWith("@@")) span.className = "hunk";
      span.textContent = visible(line) + "\n";
      body.appendChild(span);
    }
  } catch (error) {
    body.textContent = error.message;
  }
}

// An approver also sees the tenant's tasks that wait for a decision (from other
// people's sessions), refreshed from the task list every few seconds.
async function loadApprovals() {
  if (!state.me || !state.me.can.decide) return;
  const listed = await api("GET", "/v1/tasks?limit=100");
  for (const summary of listed.data) {
    const known = state.tasks.get(summary.task_id);
    if (known && !known.queued) continue; // from this session: its stream keeps it current
    if (!known && summary.phase !== "awaiting_approval") continue;
    if (!known || known.status.phase !== summary.phase) {
      const status = await api("GET", `/v1/tasks/${summary.task_id}`).catch(() => summary);
      mergeTask(summary.task_id, status);
      state.tasks.get(summary.task_id).queued = true;
    }
  }
}

async function loadTasks() {
  const session = await api("GET", `/v1/sessions/${state.session}`);
  for (const task of session.tasks) {
    if (!state.tasks.has(task.task_id)) mergeTask(task.task_id, task);
    api("GET", `/v1/tasks/${task.task_id}`)
      .then((status) => mergeTask(task.task_id, status))
      .catch(() => {});
  }
}

// ---- sessions and sending -----------------------------------------------------------

function reset() {
  state.next = 0;
  state.drafts.clear();
  state.finished.clear();
  state.tasks.clear();
  $("#messages").innerHTML = "";
  $("#tasks").innerHTML = '<p class="muted" id="no-tasks">No tasks yet.</p>';
}

async function openSession(id) {
  reset();
  state.session = id;
  localStorage.setItem(`sb.session.${state.me.owner}`, id);
  location.hash = id;
  $("#session").textContent = id;
  connect();
  loadTasks().catch(() => {});
}

async function newSession() {
  const repo = $("#repo").value.trim() || null;
  localStorage.setItem("sb.repo", repo || "");
  const created = await api("POST", "/v1/sessions", { repo, title: "" });
  await openSession(created.session_id);
}

async function send(event) {
  event.preventDefault();
  const input = $("#input");
  const content = input.value.trim();
  if (!content) return;
  if (!state.session) await newSession();
  input.value = "";
  const requestId = crypto.randomUUID ? crypto.randomUUID() : String(Math.random());
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      await api("POST", `/v1/sessions/${state.session}/messages`, { content, request_id: requestId });
      return;
    } catch (error) {
      if (error.status === 401) return; // signed out: the sign-in panel says why
      if (error.status === 403) { addLine("system", `not sent: ${error.message}`); return; }
      if (attempt === 4) addLine("system", `not sent: ${error.message}`);
      await new Promise((resolve) => setTimeout(resolve, 300 * (attempt + 1)));
    }
  }
}

function wire() {
  $("#repo").value = localStorage.getItem("sb.repo") || "";
  $("#new-session").addEventListener("click", () => newSession().catch((e) => addLine("system", e.message)));
  $("#composer").addEventListener("submit", (e) => send(e).catch((err) => addLine("system", err.message)));
  $("#input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("#composer").requestSubmit(); }
  });
  $("#diff-close").addEventListener("click", () => { $("#diff").hidden = true; });
  $("#sign-out").addEventListener("click", () => Auth.signOut());
  $("#oidc-signin").addEventListener("click", () => {
    Auth.startOidc().catch((e) => showSignIn(e.message));
  });
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("#token").value.trim();
    $("#token").value = "";
    if (!value) return;
    Auth.signInWithToken(value).then(begin).catch((err) => showSignIn(err.message));
  });
  setInterval(() => { for (const id of state.tasks.keys()) renderElapsed(id); }, 1000);
  setInterval(() => { if (!$("#app").hidden) loadApprovals().catch(() => {}); }, 3000);
}

function begin(me) {
  signedIn(me);
  const fromHash = location.hash.replace(/^#/, "");
  const known = fromHash || localStorage.getItem(`sb.session.${me.owner}`);
  if (known) openSession(known);
  loadApprovals().catch(() => {});
}

async function start() {
  wire();
  try {
    begin(await Auth.init());
  } catch (error) {
    showSignIn(error.message);
  }
}

function renderElapsed(id) {
  const task = state.tasks.get(id);
  if (task && task.meta) task.meta.textContent = metaText(task.status);
}

start();
