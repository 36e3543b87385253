// CDS Assistant clinician page: plain DOM, no framework, nothing loaded from elsewhere.
// Every text from the server (answers, sources, titles) is set as textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let info = { auth_required: false, confidence_is_probability: false };

const SIGNALS = {
  answerability: "best probability that a shown passage answers the question",
  answerable_p: "gate: probability that the shown sources answer",
  support_prob: "mean verifier support of the answer sentences",
  support: "share of answer sentences supported",
  retrieval: "retrieval strength",
  agreement: "dense and BM25 retrievers agree",
  generation: "the model's own token probability",
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("apikey").value || sessionStorage.getItem("cds-key") || "";
  if (key) { h.Authorization = "Bearer " + key; sessionStorage.setItem("cds-key", key); }
  return h;
}

function setStatus(text, error) {
  $("status").textContent = text;
  $("status").classList.toggle("error", !!error);
}

async function loadInfo() {
  try {
    info = await (await fetch("/v1/info")).json();
    $("key-box").hidden = !info.auth_required;
  } catch (e) { setStatus("The server did not answer: " + e, true); }
  try {
    const r = await fetch("/v1/index/status", { headers: headers() });
    if (!r.ok) return;
    const st = await r.json();
    for (const p of st.patients || []) $("patient").append(el("option", { value: p }, p));
  } catch (e) { /* the picker stays on "no patient" */ }
}

// "[1]", "[1, 2]", "[1-3]" -> links to the source panels; attributed citations get a star.
// ``spans``: per cited source, the passage that supports this sentence (highlighted when its link is clicked).
function renderSentence(text, attributed, spans) {
  const p = el("span", { class: "sentence" });
  const re = /\[(\d+(?:\s*[,\u2013-]\s*\d+)*)\]/g;
  let last = 0, m;
  while ((m = re.exec(text)) !== null) {
    p.append(text.slice(last, m.index));
    const nums = [];
    for (const part of m[1].split(/\s*,\s*/)) {
      const range = part.split(/\s*[\u2013-]\s*/).map(Number);
      if (range.length === 2) { for (let n = range[0]; n <= range[1] && n - range[0] < 50; n++) nums.push(n); }
      else nums.push(range[0]);
    }
    p.append("[");
    nums.forEach((n, i) => {
      if (i) p.append(", ");
      const a = el("a", { class: "cite", href: "#src-" + n, "data-n": String(n) }, String(n) + (attributed ? "*" : ""));
      a.addEventListener("click", (ev) => { ev.preventDefault(); showSource(n, (spans || []).find((s) => s.n === n)); });
      p.append(a);
    });
    p.append("]");
    last = re.lastIndex;
  }
  p.append(text.slice(last));
  return p;
}

// A sentence cut off at the generator's token limit ends in "…" (before its trailing markers),
// never as a finished claim (rag.cite.mark_cut).
function markCut(text) {
  const m = /(?:\s*\[[^\[\]]*\])*\s*$/.exec(text);
  const at = m ? m.index : text.length;
  return text.slice(0, at).replace(/[\s,;:\-–]+$/, "") + "…" + text.slice(at);
}

function showSource(n, span) {
  document.querySelectorAll(".source.active").forEach((s) => s.classList.remove("active"));
  const panel = $("src-" + n);
  if (!panel) return;
  const mark = panel.querySelector("mark.span");
  if (span && mark) {  // the passage behind the clicked sentence, which may not be the source's first span
    mark.textContent = span.text;
    mark.dataset.start = String(span.start);
    mark.dataset.end = String(span.end);
  }
  panel.classList.add("active");
  panel.scrollIntoView({ block: "nearest" });
  history.replaceState(null, "", "#src-" + n);
}

function renderConfidence(d) {
  const c = $("confidence");
  const probability = info.confidence_is_probability && d.generated && !d.abstained;
  c.className = "confidence " + d.confidence_label;
  c.textContent = `Confidence ${d.confidence.toFixed(2)} (${d.confidence_label}) \u2014 ` +
    (probability ? "estimated probability that the answer is right" : "a score, not a calibrated probability");
  const lines = Object.entries(d.confidence_signals || {})
    .filter(([k]) => k in SIGNALS)
    .map(([k, v]) => `${k} ${Number(v).toFixed(2)}: ${SIGNALS[k]}`);
  c.title = lines.length ? "Signals:\n" + lines.join("\n") : "no signals";
}

function renderAnswer(d) {
  $("draft-box").hidden = true;
  $("result").hidden = false;
  const verdict = $("verdict");
  verdict.textContent = d.abstained ? "No supported answer" : (d.generated ? "Answer" : "Evidence only");
  verdict.className = d.abstained ? "abstained" : "";
  // A second try (generator.second_try) says so: the first answer was withheld, this one saw one source.
  const second = !d.abstained && d.first_try;
  $("reason").hidden = !d.abstained && !second;
  $("reason").textContent = d.abstained ? "Abstained: " + (d.abstain_reason || "the sources do not answer")
    : (second ? "Second try, from source [1] alone: the first answer was withheld (" + d.first_try.abstain_reason + ")" : "");
  renderConfidence(d);
  const box = $("answer");
  box.replaceChildren();
  const shown = (d.sentences || []).filter((s) => s.supported);
  if (d.abstained || !shown.length) {
    box.append(el("p", { id: "answer-text" }, d.answer));
  } else {
    const para = el("p", { id: "answer-text" });
    shown.forEach((s, i) => {
      if (i) para.append(" ");
      para.append(renderSentence(s.cut_off ? markCut(s.text) : s.text, s.attributed, s.spans));
    });
    box.append(para);
  }
  $("attributed-note").hidden = d.abstained || !shown.some((s) => s.attributed);
  $("cut-note").hidden = d.abstained || !shown.some((s) => s.cut_off);
  const held = (d.sentences || []).filter((s) => !s.supported);
  $("held-back").hidden = d.abstained || !held.length;
  $("held-back-list").replaceChildren(...held.map((s) => el("li", {}, s.text)));
  $("sources-title").textContent = d.abstained ? "Closest sources" : "Sources";
  // The passage each answer sentence cites (its character span in the source) is highlighted;
  // sources retrieved but not cited are shown plain.
  const cited = new Set(d.abstained ? [] : shown.flatMap((s) => s.citations || []));
  $("sources").replaceChildren(...(d.citations || []).map((c) => {
    const who = c.patient_id ? `; patient ${c.patient_id}` : "";
    const ans = c.answerability == null ? "" : `; answers the question: ${c.answerability.toFixed(2)}`;
    const isCited = cited.has(c.n);
    const where = `${c.kind}${who}; ${c.source}, characters ${c.start}\u2013${c.end}`;
    const body = isCited
      ? el("mark", { class: "span", "data-start": String(c.start), "data-end": String(c.end) }, c.text)
      : document.createTextNode(c.text);
    return el("section", { class: "source" + (isCited ? " cited" : " uncited"), id: "src-" + c.n },
      el("h3", {}, `[${c.n}] ${c.title} \u2014 ${c.section}`),
      el("p", { class: "meta" }, where + (isCited ? " (cited span highlighted)" : " (retrieved, not cited)") + ans),
      el("blockquote", {}, body));
  }));
  const m = d.models || {};
  const t = d.timings_ms || {};
  $("provenance").textContent = `index ${d.index_version}; embedder ${m.embedder || "-"}; generator ` +
    `${m.generator || "-"}${m.adapter ? " + LoRA adapter" : ""}; ${Math.round(t.total || 0)} ms`;
}

async function ask(ev) {
  if (ev) ev.preventDefault();
  const question = $("question").value.trim();
  if (!question) { setStatus("Type a question first.", true); return; }
  const body = { question, patient_id: $("patient").value || null, stream: $("stream").checked };
  $("ask").disabled = true;
  $("result").hidden = true;
  $("draft").textContent = "";
  $("draft-box").hidden = true;
  setStatus("Retrieving sources\u2026");
  document.body.dataset.state = "asking";
  try {
    const r = await fetch("/v1/query", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!r.ok) {
      let msg = r.statusText;
      try { msg = (await r.json()).error; } catch (e) { /* keep the status text */ }
      throw new Error(msg);
    }
    if (body.stream) await readEvents(r); else renderAnswer(await r.json());
    if (!$("status").classList.contains("error")) setStatus("");
  } catch (e) {
    setStatus("Not answered: " + e.message, true);
  } finally {
    $("ask").disabled = false;
    document.body.dataset.state = "done";
  }
}

async function readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const name = (block.match(/^event: (.*)$/m) || [])[1];
      const data = JSON.parse((block.match(/^data: (.*)$/m) || [])[1] || "null");
      if (name === "sources") setStatus(`Reading ${data.sources.length} sources; writing the draft\u2026`);
      else if (name === "draft") { $("draft-box").hidden = false; $("draft").textContent += data.text; }
      else if (name === "answer") renderAnswer(data);
      else if (name === "error") setStatus("Not answered: " + data.error, true);
    }
  }
}

$("ask-form").addEventListener("submit", ask);
loadInfo().then(() => {
  const params = new URLSearchParams(location.search);
  if (params.get("q")) $("question").value = params.get("q");
  if (params.get("patient")) $("patient").value = params.get("patient");
  if (params.get("stream") === "0") $("stream").checked = false;
  if (params.get("ask") === "1") ask();
});
