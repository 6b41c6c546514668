// The memory inspector: renders the JSON API (never innerHTML: memory text is user data).
"use strict";

const KEY = "memalpha-inspector-key";
const view = document.getElementById("view");
let me = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function table(testid, columns, rows, rowClass = () => "") {
  return el("table", { "data-testid": testid },
    el("thead", {}, el("tr", {}, columns.map(([title]) => el("th", {}, title)))),
    el("tbody", {}, rows.map((row) => el("tr", { class: rowClass(row) },
      columns.map(([, cell, cls]) => el("td", { class: cls || "" }, cell(row)))))));
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, { ...options, headers });
  const body = response.status === 204 ? null : await response.json();
  if (!response.ok) {
    const error = body && body.error ? `${body.error.code}: ${body.error.message}` : response.statusText;
    throw new Error(`${response.status} ${error}`);
  }
  return body;
}

const sessionPath = (id, rest = "") => `/sessions/${encodeURIComponent(id)}${rest}`;
const time = (value) => (value ? new Date(value).toISOString().replace("T", " ").slice(0, 19) : "");

async function showSessions() {
  const { sessions } = await api("/sessions?limit=1000");
  view.replaceChildren(el("section", {},
    el("h2", {}, `Sessions (${sessions.length})`),
    sessions.length === 0 ? el("p", { class: "muted" }, "No sessions yet.") : table("sessions", [
      ["session", (s) => el("a", { href: `#/sessions/${encodeURIComponent(s.id)}` }, s.id)],
      ["version", (s) => String(s.version)],
      ["chunks", (s) => Object.entries(s.chunks).map(([k, v]) => `${k} ${v}`).join(", ")],
      ["items", (s) => Object.entries(s.items).map(([k, v]) => `${k} ${v}`).join(", ")],
      ["memory tokens", (s) => String(s.memory_tokens)],
      ["updated", (s) => time(s.updated_at)],
    ], sessions)));
}

function itemsTable(testid, items) {
  return table(testid, [
    ["id", (i) => i.id], ["content", (i) => i.content, "text"],
    ["chunk", (i) => (i.source_seq == null ? "manual" : String(i.source_seq))],
    ["updated", (i) => time(i.updated_at)],
  ], items);
}

function searchBox(id) {
  const results = el("div", { "data-testid": "search-results" });
  const input = el("input", { type: "search", name: "q", placeholder: "search this memory (BM25)", "aria-label": "search" });
  const form = el("form", { class: "search", onsubmit: async (event) => {
    event.preventDefault();
    if (!input.value.trim()) return;
    const found = await api(sessionPath(id, `/search?q=${encodeURIComponent(input.value)}&k=10`));
    const hits = [...found.semantic.map((h) => ({ ...h, kind: "semantic" })),
                  ...found.episodic.map((h) => ({ ...h, kind: "episodic" }))]
      .filter((h) => h.score > 0).sort((a, b) => b.score - a.score);
    results.replaceChildren(hits.length === 0 ? el("p", { class: "muted" }, "No match.") : table("search-hits", [
      ["score", (h) => h.score.toFixed(2)], ["kind", (h) => h.kind], ["id", (h) => h.id], ["content", (h) => h.content, "text"],
    ], hits));
  } }, input, el("button", { type: "submit" }, "Search"));
  return el("section", {}, el("h2", {}, "Search"), form, results);
}

function chunksTable(id, chunks) {
  return table("chunks", [
    ["seq", (c) => String(c.seq)],
    ["status", (c) => el("span", { class: `status-${c.status}` }, c.status)],
    ["attempts", (c) => String(c.attempts)],
    ["content", (c) => (c.content.length > 160 ? `${c.content.slice(0, 160)}…` : c.content), "text"],
    ["error", (c) => c.error || "", "text"],
    ["policy", (c) => c.policy || ""],
    ["", (c) => (c.status === "failed" && me && me.admin
      ? el("button", { "data-testid": `retry-${c.seq}`, onclick: async () => {
          await api(sessionPath(id, `/chunks/${c.seq}/retry`), { method: "POST" });
          await route();
        } }, "Retry")
      : "")],
  ], chunks, (c) => `status-row-${c.status}`);
}

function operationsTable(operations) {
  return table("operations", [
    ["#", (o) => String(o.id)], ["at", (o) => time(o.at)], ["actor", (o) => o.actor],
    ["policy", (o) => [o.policy, o.model].filter(Boolean).join(" / ")],
    ["chunk", (o) => (o.chunk_seq == null ? "" : String(o.chunk_seq))],
    ["operation", (o) => `${o.tool} ${o.memory_type}${o.memory_id ? ` ${o.memory_id}` : ""}`],
    ["status", (o) => o.status + (o.error ? `: ${o.error}` : "")],
    ["before", (o) => o.before || "", "text"], ["after", (o) => o.after || "", "text"],
  ], operations);
}

function replaySection(replay) {
  const head = el("h3", {}, `Replay ${replay.id} under ${replay.policy}: ${replay.status}`,
    ` (${replay.chunks_done}/${replay.chunks_total} chunks)`);
  const report = replay.report;
  if (!report) return el("div", { "data-testid": `replay-${replay.id}` }, head, el("p", {}, replay.error || `${replay.status}…`));
  const diff = report.diff;
  const ops = [...new Set([...Object.keys(report.live.operations), ...Object.keys(report.replay.operations)])].sort();
  const stats = [
    ["memory tokens", report.live.memory_tokens, report.replay.memory_tokens],
    ...["semantic", "episodic"].map((k) => [`${k} items`, report.live.items[k] || 0, report.replay.items[k] || 0]),
    ...ops.map((op) => [op, report.live.operations[op] || 0, report.replay.operations[op] || 0]),
    ["parse errors", "", report.parse_errors], ["failed chunks", "", report.policy_failures.length],
  ];
  const rows = [
    ...diff.only_live.map((i) => ({ change: "only in live", cls: "only-live", kind: i.kind, id: i.id, live: i.content, replay: "" })),
    ...diff.only_replay.map((i) => ({ change: "only in replay", cls: "only-replay", kind: i.kind, id: i.id, live: "", replay: i.content })),
    ...diff.changed.map((i) => ({ change: `changed (${i.similarity.toFixed(2)})`, cls: "changed", kind: i.kind, id: `${i.live_id} → ${i.replay_id}`, live: i.live, replay: i.replay })),
  ];
  if (diff.core_changed) rows.unshift({ change: "core changed", cls: "changed", kind: "core", id: "", live: diff.live_core, replay: diff.replay_core });
  return el("div", { "data-testid": `replay-${replay.id}` }, head,
    el("p", {}, `model ${report.model || "?"} · ${diff.same} identical items · ${diff.only_live.length} only in live · `,
      `${diff.only_replay.length} only in replay · ${diff.changed.length} changed`),
    table("replay-stats", [["", (r) => r[0]], ["live", (r) => String(r[1])], ["replay", (r) => String(r[2])]], stats),
    table("replay-diff", [["change", (r) => r.change], ["kind", (r) => r.kind], ["id", (r) => r.id],
      ["live", (r) => r.live, "text"], ["replay", (r) => r.replay, "text"]], rows, (r) => r.cls),
    report.answers.length === 0 ? "" : table("replay-answers", [
      ["question", (a) => a.question, "text"], ["gold", (a) => (a.gold == null ? "" : String(a.gold))],
      ["live", (a) => a.live, "text"],
      ["replay", (a) => a.replay, "text"],
    ], report.answers));
}

async function showSession(id) {
  const [session, memory, chunks, operations, replays] = await Promise.all([
    api(sessionPath(id)), api(sessionPath(id, "/memory")),
    api(sessionPath(id, "/chunks?limit=1000")), api(sessionPath(id, "/operations?limit=1000")),
    api(sessionPath(id, "/replays")),
  ]);
  view.replaceChildren(
    el("section", {},
      el("h2", { "data-testid": "session-title" }, `Session ${session.id}`),
      el("p", {}, `version ${session.version} · ${session.memory_tokens} memory tokens · `,
        Object.entries(session.chunks).map(([k, v]) => `${k} ${v}`).join(", "),
        session.blocked_by_seq == null ? "" : ` · blocked by chunk ${session.blocked_by_seq}`)),
    searchBox(id),
    el("section", {}, el("h2", {}, "Core"),
      el("div", { class: "core", "data-testid": "core" }, memory.core || "(empty)")),
    el("section", {}, el("h2", {}, `Semantic (${memory.semantic.length})`), itemsTable("semantic", memory.semantic)),
    el("section", {}, el("h2", {}, `Episodic (${memory.episodic.length})`), itemsTable("episodic", memory.episodic)),
    el("section", {}, el("h2", {}, `Chunks (${chunks.chunks.length})`), chunksTable(id, chunks.chunks)),
    el("section", {}, el("h2", {}, `Operations (${operations.operations.length})`), operationsTable(operations.operations)),
    el("section", { id: "replays" }, el("h2", {}, `Replays (${replays.replays.length})`),
      replays.replays.length === 0
        ? el("p", { class: "muted" }, "None in this server process (POST /sessions/{id}/replay, admin).")
        : replays.replays.map(replaySection)),
  );
}

async function route() {
  showError("");
  try {
    me = await api("/me");
    document.getElementById("who").textContent = `tenant ${me.tenant_id}${me.admin ? " (admin)" : ""}`;
    const match = location.hash.match(/^#\/sessions\/([^/]+)$/);
    if (match) await showSession(decodeURIComponent(match[1]));
    else await showSessions();
  } catch (error) {
    view.replaceChildren();
    showError(error.message);
  }
}

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("key");
  if (input.value) sessionStorage.setItem(KEY, input.value);
  else sessionStorage.removeItem(KEY);
  input.value = "";
  route();
});
window.addEventListener("hashchange", route);
route();
