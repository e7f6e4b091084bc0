// The Attune console: plain JavaScript over the /v1 API, no build step.
//
// Everything the API returns is put on the page as text (el() appends strings as text nodes,
// attributes go through setAttribute): nothing from the API is ever parsed as HTML, so a
// product title like `<img src=x onerror=...>` shows as those characters.
"use strict";

const KEY = "attune.apiKey";
// Narrow segments first: the send list gives each person to the first segment they are in.
const DEFAULT_SEGMENTS = [
  ["lapsing", '{"lifecycle": ["lapsing"]}'],
  ["big-spenders", '{"min_monetary": 200}'],
  ["everyone", "{}"],
];

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function show(target, ...nodes) {
  const node = typeof target === "string" ? $(target) : target;
  node.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined));
}

function setStatus(id, text, kind = "") {
  const node = $(id);
  node.textContent = text;
  node.className = kind;
}

// -- The API ------------------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Accept: "application/json, application/problem+json, */*" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const type = response.headers.get("content-type") || "";
  const data = /json/.test(type) && !/ndjson/.test(type) ? await response.json() : await response.text();
  return { status: response.status, ok: response.ok, data };
}

function problem(result) {
  const data = result.data;
  if (data && typeof data === "object") {
    const fields = (data.errors || []).map((e) => `${e.field}: ${e.problem}`);
    return `${result.status} ${data.title || ""}: ${fields.length ? fields.join("; ") : data.detail || ""}`;
  }
  return `${result.status}: ${String(data).slice(0, 200)}`;
}

function problemBox(result) {
  return el("p", { class: "problem", role: "alert" }, problem(result));
}

function jsonLines(text) {
  return text.split("\n").filter((line) => line.trim()).map((line) => JSON.parse(line));
}

async function download(path, filename) {
  const key = sessionStorage.getItem(KEY);
  const response = await fetch(path, { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  if (!response.ok) {
    alert(`${response.status}: could not download ${filename}`);
    return;
  }
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// -- Rendering any JSON as text: objects as definition lists, lists of objects as tables ---------

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function formatNumber(n) {
  return Number.isInteger(n) ? n.toLocaleString("en") : Number(n.toPrecision(4)).toString();
}

function renderValue(value, depth = 0) {
  if (value === null || value === undefined) return el("span", { class: "none" }, "—");
  if (Array.isArray(value)) {
    if (value.length === 0) return el("span", { class: "none" }, "none");
    if (value.every(isObject)) return renderTable(value, depth);
    if (value.every((v) => v === null || typeof v !== "object")) return el("span", {}, value.map(String).join(", "));
    return el("ol", {}, value.map((v) => el("li", {}, renderValue(v, depth + 1))));
  }
  if (isObject(value)) {
    if (depth > 5) return el("code", {}, JSON.stringify(value));
    const entries = Object.entries(value);
    if (entries.length === 0) return el("span", { class: "none" }, "none");
    return el("dl", { class: "kv" }, entries.map(([k, v]) => [el("dt", {}, k), el("dd", {}, renderValue(v, depth + 1))]));
  }
  if (typeof value === "number") return el("span", { class: "num" }, formatNumber(value));
  if (typeof value === "boolean") return el("span", { class: value ? "pass" : "fail" }, String(value));
  return el("span", {}, String(value));
}

function renderTable(rows, depth = 0, columns = null) {
  const cols = columns || [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return el(
    "table",
    {},
    el("thead", {}, el("tr", {}, cols.map((c) => el("th", { scope: "col" }, c)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, cols.map((c) => el("td", {}, renderValue(r[c], depth + 1)))))),
  );
}

// -- API key -------------------------------------------------------------------------------------

function keyState() {
  const has = Boolean(sessionStorage.getItem(KEY));
  setStatus("key-state", has ? "key set for this tab" : "no key (fine when authentication is off)");
}

// -- Copy studio ---------------------------------------------------------------------------------

let previewSeq = 0;
let previewTimer = null;

function addSegment(name = "", rule = "{}") {
  const row = el(
    "div",
    { class: "segment" },
    el("label", {}, "Name ", el("input", { class: "segment-name", value: name, required: true, pattern: "[a-z0-9][a-z0-9_.\\-]*" })),
    el("label", {}, "Rule ", el("textarea", { class: "segment-rule", rows: 1 })),
    el("button", { type: "button", class: "remove", onclick: () => { row.remove(); schedulePreview(); } }, "Remove"),
    el("div", { class: "segment-live" }, el("span", { class: "segment-count" }, "…"), el("span", { class: "segment-sample" })),
  );
  row.querySelector(".segment-rule").value = rule;
  $("segments").append(row);
  schedulePreview();
}

function segmentsFromForm() {
  const segments = [];
  const problems = [];
  for (const row of $("segments").querySelectorAll(".segment")) {
    const name = row.querySelector(".segment-name").value.trim();
    try {
      const rule = JSON.parse(row.querySelector(".segment-rule").value || "{}");
      segments.push({ name, rule });
    } catch (error) {
      problems.push(row);
    }
  }
  return { segments, problems };
}

function schedulePreview() {
  clearTimeout(previewTimer);
  previewTimer = setTimeout(refreshPreview, 300);
}

async function refreshPreview() {
  const seq = ++previewSeq;
  const rows = [...$("segments").querySelectorAll(".segment")];
  const { segments, problems } = segmentsFromForm();
  for (const row of problems) show(row.querySelector(".segment-count"), el("span", { class: "fail" }, "the rule is not valid JSON"));
  if (problems.length || segments.length === 0) return;
  const result = await api("POST", "/v1/copy/audience", {
    channel: $("channel").value,
    audience: { segments },
    sample: 5,
  });
  if (seq !== previewSeq) return; // a newer preview is on its way
  if (!result.ok) {
    for (const row of rows) show(row.querySelector(".segment-count"), el("span", { class: "fail" }, problem(result)));
    return;
  }
  result.data.segments.forEach((seg, i) => {
    const row = rows[i];
    if (!row) return;
    const excluded = Object.entries(seg.excluded).map(([rule, n]) => `${n} left out by ${rule}`);
    show(
      row.querySelector(".segment-count"),
      el("strong", {}, `${formatNumber(seg.size)} members`),
      ` (${seg.rule}${excluded.length ? "; " + excluded.join(", ") : ""})`,
    );
    show(row.querySelector(".segment-sample"), seg.sample.length ? `sample: ${seg.sample.join(", ")}` : "");
  });
}

function listOf(text) {
  return text.split(/[,\n]/).map((s) => s.trim()).filter(Boolean);
}

function copyRequest() {
  const { segments, problems } = segmentsFromForm();
  if (problems.length) throw new Error("a segment's rule is not valid JSON");
  return {
    brief: {
      goal: $("goal").value,
      categories: listOf($("categories").value),
      item_ids: listOf($("item-ids").value),
      tone: $("tone").value,
      must_say: $("must-say").value.split("\n").map((s) => s.trim()).filter(Boolean),
    },
    channel: $("channel").value,
    audience: { segments },
    variants: Number($("variants").value),
    async: $("run-async").checked,
  };
}

async function writeCopy(event) {
  event.preventDefault();
  let body;
  try {
    body = copyRequest();
  } catch (error) {
    setStatus("copy-status", error.message, "fail");
    return;
  }
  show("copy-result");
  show("export");
  setStatus("copy-status", "writing…");
  $("write-copy").disabled = true;
  try {
    const result = await api("POST", "/v1/copy", body);
    if (result.status === 202) {
      await followJob(result.data.job_id);
    } else if (result.ok) {
      renderCopy(result.data.campaign_id, result.data.segments, result.data);
    } else {
      setStatus("copy-status", "", "");
      show("copy-result", problemBox(result));
    }
  } finally {
    $("write-copy").disabled = false;
  }
}

async function followJob(jobId) {
  for (;;) {
    const job = await api("GET", `/v1/jobs/${encodeURIComponent(jobId)}`);
    if (!job.ok) {
      show("copy-result", problemBox(job));
      return;
    }
    const p = job.data.progress;
    setStatus("copy-status", `job ${jobId}: ${job.data.status}, ${p.members_scanned} of ${p.members_total} people scanned`);
    if (job.data.status === "failed") {
      show("copy-result", el("p", { class: "problem" }, `the job failed: ${job.data.error || "no reason given"}`));
      return;
    }
    if (job.data.status === "done") break;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  const results = await api("GET", `/v1/jobs/${encodeURIComponent(jobId)}/results?format=jsonl`);
  if (!results.ok) {
    show("copy-result", problemBox(results));
    return;
  }
  const bySegment = new Map();
  for (const variant of jsonLines(results.data)) {
    if (!bySegment.has(variant.segment)) {
      bySegment.set(variant.segment, { name: variant.segment, size: variant.segment_size, variants: [] });
    }
    bySegment.get(variant.segment).variants.push(variant);
  }
  renderCopy(jobId, [...bySegment.values()], null);
}

function renderCopy(campaignId, segments, whole) {
  const variants = segments.reduce((n, s) => n + s.variants.length, 0);
  const count = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  setStatus("copy-status", `campaign ${campaignId}: ${count(variants, "variant")} for ${count(segments.length, "segment")}`, "pass");
  show(
    "copy-result",
    whole && whole.degraded.length ? el("p", { class: "degraded" }, `degraded: ${whole.degraded.join("; ")}`) : null,
    segments.map(renderSegment),
  );
  renderExport(campaignId);
}

function renderSegment(seg) {
  const excluded = Object.entries(seg.excluded || {}).map(([rule, n]) => `${n} left out by ${rule}`);
  return el(
    "article",
    { class: "segment-result", "data-segment": seg.name },
    el("h3", {}, `Segment ${seg.name}`),
    el(
      "p",
      {},
      seg.rule ? `${seg.rule}. ` : "",
      `${formatNumber(seg.size ?? 0)} members`,
      excluded.length ? `; ${excluded.join(", ")}` : "",
      seg.offer_id ? `. Offer ${seg.offer_id}` : "",
    ),
    seg.note ? el("p", { class: "note" }, seg.note) : null,
    seg.variants.length ? seg.variants.map(renderVariant) : el("p", { class: "none" }, "no variants for this segment"),
  );
}

function renderVariant(v) {
  const x = v.explanation || {};
  return el(
    "div",
    { class: "variant", "data-variant": v.variant_id },
    el(
      "h4",
      {},
      `${v.variant_id} `,
      el("span", { class: v.checks_passed ? "badge pass" : "badge fail" }, v.checks_passed ? "checks passed" : "withheld"),
    ),
    v.subject ? el("p", { class: "subject" }, el("b", {}, "Subject: "), v.subject) : null,
    el("p", { class: "copy-text" }, v.text),
    el("p", { class: "meta" }, `items: ${(v.item_ids || []).join(", ") || "none"} · offer: ${v.offer_id || "none"} · writer: ${v.writer} · attempts: ${v.attempts ?? "—"}`),
    el(
      "details",
      { class: "checks" },
      el("summary", {}, `Checks (${(v.checks || []).length})${(v.problems || []).length ? `, ${v.problems.length} problems` : ""}`),
      el("ul", {}, (v.checks || []).map((c) => {
        const failed = (v.problems || []).some((p) => p.startsWith(c));
        return el("li", { class: failed ? "fail" : "pass" }, `${failed ? "✗" : "✓"} ${c}`);
      })),
      (v.problems || []).length ? el("ul", { class: "problems" }, v.problems.map((p) => el("li", {}, p))) : null,
    ),
    el(
      "details",
      { class: "explanation", open: true },
      el("summary", {}, "Why"),
      el("p", {}, x.summary || ""),
      el("dl", { class: "kv" }, [
        ["segment", x.segment],
        ["offer", x.offer],
        ["variant", x.variant],
      ].map(([k, t]) => [el("dt", {}, k), el("dd", {}, t || "—")])),
      (x.items || []).length ? el("ul", {}, x.items.map((r) => el("li", {}, r.item_id ? `${r.item_id}: ${r.text}` : r.text))) : null,
      (x.rules_fired || []).length ? renderTable(x.rules_fired, 1, ["rule_id", "effect", "reason", "targets"]) : null,
    ),
    (v.degraded || []).length ? el("p", { class: "degraded" }, `degraded: ${v.degraded.join("; ")}`) : null,
  );
}

function renderExport(campaignId) {
  const id = encodeURIComponent(campaignId);
  show(
    "export",
    el("h3", {}, "Export"),
    el(
      "p",
      {},
      el("button", { type: "button", id: "show-recipients", onclick: () => showRecipients(campaignId) }, "Show recipients"),
      " ",
      el("button", { type: "button", onclick: () => download(`/v1/jobs/${id}/recipients?format=csv`, `recipients-${campaignId}.csv`) }, "Download recipients (CSV)"),
      " ",
      el("button", { type: "button", onclick: () => download(`/v1/jobs/${id}/results?format=csv`, `copy-${campaignId}.csv`) }, "Download variants (CSV)"),
    ),
    el("div", { id: "recipients" }),
  );
}

async function showRecipients(campaignId) {
  const result = await api("GET", `/v1/jobs/${encodeURIComponent(campaignId)}/recipients?format=jsonl`);
  if (!result.ok) {
    show("recipients", problemBox(result));
    return;
  }
  const rows = jsonLines(result.data);
  const counts = new Map();
  for (const r of rows) {
    const key = `${r.segment}\u0000${r.variant_id}`;
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  const perVariant = [...counts.entries()].map(([key, n]) => {
    const [segment, variant_id] = key.split("\u0000");
    return { segment, variant_id, recipients: n };
  });
  const shown = rows.slice(0, 100);
  show(
    "recipients",
    el("p", { class: "recipients-total" }, `${formatNumber(rows.length)} recipients`),
    renderTable(perVariant, 0, ["segment", "variant_id", "recipients"]),
    el("h4", {}, rows.length > shown.length ? `The first ${shown.length}` : "Everyone"),
    renderTable(shown, 0, ["segment", "variant_id", "user_id"]),
  );
}

// -- Decision inspector --------------------------------------------------------------------------

async function inspectDecision(event) {
  if (event) event.preventDefault();
  const id = $("decision-id").value.trim();
  if (!id) return;
  setStatus("decision-status", "looking up…");
  const result = await api("GET", `/v1/decisions/${encodeURIComponent(id)}`);
  if (!result.ok) {
    setStatus("decision-status", "");
    show("decision-result", problemBox(result));
    return;
  }
  setStatus("decision-status", `decision ${id}`, "pass");
  show("decision-result", renderDecision(result.data));
}

function stage(title, entries, removed = []) {
  return el(
    "li",
    { class: "stage", "data-stage": title },
    el("h4", {}, `${title} (${entries.length})`),
    entries.length || removed.length
      ? el("ul", {}, entries.map((e) => el("li", {}, e)), removed.map((e) => el("li", { class: "removed" }, e)))
      : el("p", { class: "none" }, "none"),
  );
}

function renderDecision(d) {
  const r = d.record || {};
  const trace = r.trace || {};
  const rulesText = (m) => Object.entries(m || {}).map(([offer, rules]) => `${offer}: ${rules.join(", ")}`);
  const ranked = (trace.ranked || []).map((o) => `${o.offer_id}${o.probability == null ? "" : ` (p = ${formatNumber(o.probability)})`}`);
  const content = r.content || {};
  const guard = content.guard_problems || [];
  const explanation = r.explanation || {};
  const candidates = ((r.retrieval || {}).candidates || []).map((c) => ({
    item_id: c.item_id,
    price: c.price,
    score: c.score,
    parts: c.parts,
  }));
  return el(
    "div",
    { class: "decision" },
    el("dl", { class: "kv" }, [
      ["decision", d.decision_id],
      ["created", d.created_at],
      ["channel", d.channel],
      ["offer", d.offer_id || "none"],
      ["reward", d.reward == null ? "none yet" : formatNumber(d.reward)],
      ["retrieval", (r.retrieval || {}).strategy],
      ["degraded", (r.degraded || []).join("; ") || "none"],
    ].map(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "—")])),
    el("h3", {}, "Offer path"),
    el(
      "ol",
      { class: "trace" },
      stage("candidates", trace.candidates || []),
      stage("eligible", trace.eligible || [], rulesText(trace.not_eligible)),
      stage("capped", rulesText(trace.capped)),
      stage("ranked", ranked),
      stage("chosen", trace.chosen ? [trace.chosen] : []),
    ),
    r.choice ? el("div", {}, el("h4", {}, "The bandit's choice"), renderValue(r.choice)) : null,
    el("h3", {}, "Rules fired"),
    (explanation.rules_fired || []).length
      ? renderTable(explanation.rules_fired, 0, ["rule_id", "effect", "reason", "targets"])
      : el("p", { class: "none" }, "none"),
    el("h3", {}, "Items and scores"),
    candidates.length ? renderTable(candidates, 0, ["item_id", "price", "score", "parts"]) : el("p", { class: "none" }, "none"),
    el("h3", {}, "Copy"),
    el("p", { class: "copy-text" }, content.text || ""),
    el("p", { class: "meta" }, `writer: ${content.writer || "none"} · attempts: ${content.attempts ?? "—"} · items: ${(content.item_ids || []).join(", ") || "none"} · offer: ${content.offer_id || "none"}`),
    el("h3", {}, "Guard's verdict"),
    guard.length
      ? el("div", { class: "guard fail" }, el("p", {}, "withheld: the last draft failed the output guard, so no copy was sent"), el("ul", {}, guard.map((p) => el("li", {}, String(p)))))
      : el("p", { class: "guard pass" }, content.attempts > 1
        ? `passed on draft ${content.attempts}: the earlier drafts were rejected (see degraded above)`
        : `passed: the output guard found no problem in draft ${content.attempts ?? 1}`),
    el("h3", {}, "Explanation"),
    el("p", {}, explanation.summary || ""),
    el("h3", {}, "Versions"),
    renderValue(r.versions || {}),
    el("details", {}, el("summary", {}, "The whole record"), renderValue(r)),
  );
}

// -- Experiments, drift and eval reports ---------------------------------------------------------

async function loadGeneric(target, path) {
  const box = `${target}-result`;
  show(box, el("p", {}, "loading…"));
  const result = await api("GET", path);
  if (result.status === 404) {
    show(box, el("p", { class: "unavailable" }, `Not available on this server: GET ${path} answered 404.`));
  } else if (!result.ok) {
    show(box, problemBox(result));
  } else {
    show(box, renderValue(result.data));
  }
}

async function loadEvals() {
  show("eval-report");
  const result = await api("GET", "/v1/evals/reports");
  if (result.status === 404) {
    show("evals-list", el("p", { class: "unavailable" }, "Not available on this server: GET /v1/evals/reports answered 404."));
    return;
  }
  if (!result.ok) {
    show("evals-list", problemBox(result));
    return;
  }
  if (result.data.length === 0) {
    show("evals-list", el("p", { class: "none" }, "No eval reports under ATTUNE_HOME/evals (attune eval run writes them)."));
    return;
  }
  show(
    "evals-list",
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, ["report", "suite", "kind", "started", "gate", ""].map((c) => el("th", {}, c)))),
      el(
        "tbody",
        {},
        result.data.map((r) =>
          el(
            "tr",
            {},
            el("td", {}, r.report_id),
            el("td", {}, r.name),
            el("td", {}, r.kind),
            el("td", {}, r.started_at || "—"),
            el("td", { class: r.passed ? "pass" : "fail" }, r.passed == null ? "—" : r.passed ? "passed" : "failed"),
            el("td", {}, el("button", { type: "button", onclick: () => openReport(r.report_id) }, "Open")),
          ),
        ),
      ),
    ),
  );
}

async function openReport(reportId) {
  const result = await api("GET", `/v1/evals/reports/${encodeURIComponent(reportId)}`);
  if (!result.ok) {
    show("eval-report", problemBox(result));
    return;
  }
  const m = result.data;
  const rows = (m.rows || []).map((row) => ({ dataset: row.dataset, system: row.system, ...(row.metrics || {}) }));
  show(
    "eval-report",
    el("h3", {}, `${m.name} (${m.kind})`),
    el("p", { class: m.passed ? "pass" : "fail" }, m.summary || (m.passed ? "passed" : "failed")),
    el("h4", {}, "Thresholds"),
    renderValue(m.thresholds || []),
    el("h4", {}, "Results"),
    rows.length ? renderTable(rows) : el("p", { class: "none" }, "none"),
    (m.notes || []).length ? [el("h4", {}, "Notes"), el("ul", {}, m.notes.map((n) => el("li", {}, n)))] : null,
    el("details", {}, el("summary", {}, "Everything in metrics.json"), renderValue(m)),
  );
}

// -- Views ---------------------------------------------------------------------------------------

const LOADERS = {
  experiments: () => loadGeneric("experiments", "/v1/experiments/report"),
  drift: () => loadGeneric("drift", "/v1/drift"),
  evals: loadEvals,
};

function openView(name) {
  if (!$(`view-${name}`)) name = "copy";
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${name}`;
  for (const tab of document.querySelectorAll("#tabs button")) tab.classList.toggle("active", tab.dataset.view === name);
  if (LOADERS[name]) LOADERS[name]();
}

function route() {
  const [view, arg] = decodeURIComponent(location.hash.slice(1)).split("/");
  openView(view || "copy");
  if (view === "decision" && arg) {
    $("decision-id").value = arg;
    inspectDecision();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = sessionStorage.getItem(KEY) || "";
  keyState();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY, key);
    else sessionStorage.removeItem(KEY);
    keyState();
    schedulePreview();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    $("api-key").value = "";
    keyState();
  });
  for (const tab of document.querySelectorAll("#tabs button")) {
    tab.addEventListener("click", () => { location.hash = tab.dataset.view; });
  }
  for (const button of document.querySelectorAll("button.reload")) {
    button.addEventListener("click", () => LOADERS[button.dataset.target]());
  }
  window.addEventListener("hashchange", route);
  $("copy-form").addEventListener("submit", writeCopy);
  $("add-segment").addEventListener("click", () => addSegment(`segment-${$("segments").children.length + 1}`));
  $("segments").addEventListener("input", schedulePreview);
  $("channel").addEventListener("change", schedulePreview);
  $("decision-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("decision-id").value.trim();
    if (location.hash === `#decision/${encodeURIComponent(id)}`) inspectDecision();
    else location.hash = `decision/${encodeURIComponent(id)}`;
  });
  for (const [name, rule] of DEFAULT_SEGMENTS) addSegment(name, rule);
  route();
});
