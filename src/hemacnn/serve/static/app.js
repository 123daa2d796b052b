// hemacnn review page: upload cells, show the model's call, let a person confirm or re-assign
// it, keep the differential count current, and download the reviewed labels as CSV.
// The review is kept in this browser (IndexedDB: the images are blobs, too big for
// localStorage), so a reload or a crash loses nothing.
"use strict";

const state = { card: null, cells: [], db: null, unsaved: false, saving: 0 };
const Z = 1.959963984540054; // two-sided 95% normal quantile, as in hemacnn.metrics
const METHOD_NAMES = { gradcam: "Grad-CAM" };

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  kids.forEach((k) => e.append(k));
  return e;
};
const label = (code) => `${code} — ${state.card.names[code] || code}`;
// how the server computed the probabilities (the API's "inference"), e.g. "fp32 · torch 2.14.1+cu130 · cpu"
const INFERENCE_FIELDS = ["precision", "backend", "backend_version", "device"];
const computedWith = (inf) => inf ? `${inf.precision} · ${inf.backend} ${inf.backend_version} · ${inf.device}` : "";

function wilson(k, n) { // Wilson score interval, the same formula as the evaluation
  if (n === 0) return null;
  const p = k / n, d = 1 + Z * Z / n;
  const c = (p + Z * Z / (2 * n)) / d;
  const h = Z * Math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / d;
  return [Math.max(0, c - h), Math.min(1, c + h)];
}

// --- the review kept in this browser, one record per cell, per model -------------------------

function openStore() {
  return new Promise((resolve) => {
    if (!window.indexedDB) { resolve(null); return; }
    const req = indexedDB.open("hemacnn-review", 1);
    req.onupgradeneeded = () => req.result.createObjectStore("cells", { keyPath: "id" });
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => resolve(null); // e.g. a private window: the page works, unsaved
  });
}

function storeTx(mode, work) {
  if (!state.db) return Promise.resolve(null);
  return new Promise((resolve) => {
    const tx = state.db.transaction("cells", mode);
    const result = work(tx.objectStore("cells"));
    tx.oncomplete = () => resolve(result.result === undefined ? null : result.result);
    tx.onerror = tx.onabort = () => { showErrors([`Could not save the review in this browser: ${tx.error}`]); resolve(null); };
  });
}

const modelId = () => `${state.card.source}|${state.card.classes.join(",")}`;
const record = (c) => ({ id: `${modelId()}|${c.key}`, model_id: modelId(), seq: c.seq, key: c.key,
  file: c.file, blob: c.blob, model: c.model, probability: c.probability,
  probabilities: c.probabilities, review: c.review, warning: c.warning, reviewed: c.reviewed,
  inference: c.inference });

async function saveCells(cells) {
  if (state.db) $("#saved").textContent = "Saving the review in this browser…";
  state.saving += 1;
  await storeTx("readwrite", (s) => { cells.forEach((c) => s.put(record(c))); return {}; });
  state.saving -= 1;
  if (state.saving > 0) return; // a later save says when everything is stored
  $("#saved").textContent = state.db ? `Review saved in this browser (${state.cells.length} cells).`
    : "This browser cannot keep the review: download the CSV before leaving.";
}

async function restoreCells() {
  const all = (await storeTx("readonly", (s) => s.getAll())) || [];
  return all.filter((r) => r.model_id === modelId()).sort((a, b) => a.seq - b.seq);
}

function setUnsaved(value) { // review work not yet downloaded as CSV
  state.unsaved = value;
  localStorage.setItem(`hemacnn-unsaved|${modelId()}`, value ? "1" : "");
}

// --- model, differential, cells ---------------------------------------------------------------

async function loadModel() {
  const card = await (await fetch("/api/model")).json();
  card.names = {};
  card.classes.forEach((c, i) => { card.names[c] = (card.class_names || card.classes)[i]; });
  state.card = card;
  $("#model-info").textContent =
    `Model ${card.arch.name} · ${card.input_size} px · probabilities in ` +
    `${computedWith(card.inference)} · classes: ` +
    card.classes.map(label).join(", ") +
    ` · cells with top probability below ${card.review_below} or with a warning are flagged for review` +
    (card.adaptation ? ` · adapted to ${card.adaptation.domain} on ` +
      `${Object.values(card.adaptation.counts).reduce((a, b) => a + b, 0)} labelled cells` : "");
  $("#who-note").hidden = !card.classes.includes("BLA");
  state.db = await openStore();
  for (const r of await restoreCells()) {
    const cell = { ...r, url: URL.createObjectURL(r.blob) };
    state.cells.push(cell);
    $("#cells").append(renderCell(cell));
  }
  state.unsaved = localStorage.getItem(`hemacnn-unsaved|${modelId()}`) === "1";
  if (state.cells.length) {
    $("#status").textContent = `Restored ${state.cells.length} cell(s) and your review from this browser.`;
    $("#saved").textContent = `Review saved in this browser (${state.cells.length} cells).`;
  }
  renderDifferential();
}

function currentClass(cell) { return cell.reviewed || cell.model; }

function renderDifferential() {
  const classes = state.card.classes;
  const order = classes.includes("BLA") ? ["BLA", ...classes.filter((c) => c !== "BLA")] : classes;
  const n = state.cells.length;
  const tbody = $("#differential tbody");
  tbody.replaceChildren();
  for (const code of order) {
    const k = state.cells.filter((c) => currentClass(c) === code).length;
    const ci = wilson(k, n);
    tbody.append(el("tr", { class: code === "BLA" ? "blast" : "", "data-class": code },
      el("td", { text: label(code) }),
      el("td", { class: "num count", text: String(k) }),
      el("td", { class: "num pct", text: n ? (100 * k / n).toFixed(1) : "–" }),
      el("td", { class: "num", text: ci ? `${(100 * ci[0]).toFixed(1)}–${(100 * ci[1]).toFixed(1)}` : "–" })));
  }
  const flagged = state.cells.filter((c) => c.review).length;
  const open = state.cells.filter((c) => c.review && !c.reviewed).length;
  const changed = state.cells.filter((c) => c.reviewed && c.reviewed !== c.model).length;
  const confirmed = state.cells.filter((c) => c.reviewed && c.reviewed === c.model).length;
  $("#diff-summary").textContent = n
    ? `${n} cells · ${flagged} flagged for review, ${open} still open · reviewed by you: ` +
      `${changed} re-assigned, ${confirmed} confirmed`
    : "No cells yet.";
  $("#download").disabled = $("#clear").disabled = n === 0;
}

function bars(probs, top) {
  const box = el("div", { class: "bars" });
  Object.entries(probs).sort((a, b) => b[1] - a[1]).forEach(([code, p]) => {
    const fill = el("div", { class: "fill" });
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    box.append(el("div", { class: "bar" + (code === top ? " top" : ""), title: label(code) },
      el("span", { text: code }), el("div", { class: "track" }, fill),
      el("span", { class: "p", text: (100 * p).toFixed(1) + "%" })));
  });
  return box;
}

function reviewBadge(cell) {
  // What a person has done with this cell; a flagged cell stays "review" until someone acts.
  if (cell.reviewed && cell.reviewed !== cell.model) return ["re-assigned", "reassigned"];
  if (cell.reviewed) return ["confirmed", "confirmed"];
  return cell.review ? ["review", "review"] : null;
}

function renderCell(cell) {
  const badge = el("span", { class: "badge status" });
  const pred = el("div", { class: "pred" }, el("span", { class: "code", text: cell.model }),
    el("span", { text: state.card.names[cell.model] }),
    el("span", { class: "prob muted", text: `  ${(100 * cell.probability).toFixed(1)}%`,
      title: `computed in ${computedWith(cell.inference) || "(not recorded)"}` }), badge);
  if (cell.warning) pred.append(el("span", { class: "badge warn", text: "suspicious", title: cell.warning }));
  const select = el("select", { "aria-label": `class of ${cell.file}`, class: "reassign" });
  state.card.classes.forEach((c) => {
    const o = el("option", { value: c, text: label(c) });
    if (c === currentClass(cell)) o.selected = true;
    select.append(o);
  });
  const confirm = el("button", { class: "secondary confirm", text: "Confirm",
    title: "the class in the menu is right" });
  const imgs = el("div", { class: "imgs" }, el("img", { src: cell.url, alt: cell.file }));
  const heat = el("button", { class: "secondary heat", text: "Heat map" });
  heat.hidden = !state.card.heat_maps; // heat maps need the PyTorch model, not an ONNX export
  const heatLabel = el("div", { class: "heat-label" });
  heat.addEventListener("click", () => showHeatMap(cell, imgs, heatLabel, heat));
  const box = el("div", { class: "cell", "data-file": cell.file },
    imgs, heatLabel, el("div", { class: "fname", text: cell.file, title: cell.file }), pred,
    bars(cell.probabilities, cell.model), el("div", { class: "actions" }, select, confirm, heat));
  const show = () => {
    const b = reviewBadge(cell);
    badge.hidden = !b;
    if (b) { badge.textContent = b[0]; badge.className = `badge status ${b[1]}`; }
    box.classList.toggle("review", cell.review && !cell.reviewed);
    box.classList.toggle("reassigned", Boolean(cell.reviewed) && cell.reviewed !== cell.model);
    box.classList.toggle("reviewed", Boolean(cell.reviewed));
    confirm.disabled = Boolean(cell.reviewed);
    confirm.textContent = cell.reviewed ? "Reviewed" : "Confirm";
  };
  const act = (code) => { // a person decided this cell's class
    cell.reviewed = code;
    show();
    setUnsaved(true);
    renderDifferential();
    saveCells([cell]);
  };
  select.addEventListener("change", () => act(select.value));
  confirm.addEventListener("click", () => act(select.value));
  show();
  return box;
}

async function showHeatMap(cell, imgs, heatLabel, button) {
  button.disabled = true;
  const form = new FormData();
  form.append("file", cell.blob, cell.file);
  const resp = await fetch("/api/explain", { method: "POST", body: form });
  if (!resp.ok) {
    showErrors([(await resp.json()).detail]);
    button.disabled = false;
    return;
  }
  const code = resp.headers.get("X-Class");
  const method = resp.headers.get("X-Method");
  const p = Number(resp.headers.get("X-Probability"));
  const precision = resp.headers.get("X-Precision");
  const note = resp.headers.get("X-Map-Note");
  const text = `${METHOD_NAMES[method] || method} for ${label(code)} (p = ${(100 * p).toFixed(1)}%` +
    (precision ? `, ${precision})` : ")") + (note ? `; ${note}` : "");
  const url = URL.createObjectURL(await resp.blob());
  imgs.append(el("img", { src: url, alt: `heat map of ${cell.file}: ${text}`, class: "heatmap" }));
  heatLabel.replaceChildren(el("div", { class: "heat-text", text: `Heat map: ${text}` }),
    el("div", { class: "scale" }, el("span", { text: "low" }), el("div", { class: "ramp" }),
      el("span", { text: "high" })));
}

function showErrors(messages) {
  const ul = $("#errors");
  messages.forEach((m) => ul.append(el("li", { text: m })));
}

// --- upload: duplicates skipped, batches the server accepts -----------------------------------

async function contentKey(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  if (window.crypto && crypto.subtle) { // secure contexts (localhost, https)
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  let h = 0x811c9dc5; // FNV-1a over the bytes, with the length: enough to spot a repeat upload
  for (const b of bytes) { h ^= b; h = Math.imul(h, 0x01000193) >>> 0; }
  return `${bytes.length}-${h.toString(16)}`;
}

async function upload(fileList) {
  const picked = Array.from(fileList);
  if (!picked.length) return;
  $("#errors").replaceChildren();
  const seen = new Set(state.cells.map((c) => c.key));
  const files = [];
  let repeats = 0;
  for (const f of picked) {
    const key = await contentKey(f);
    if (seen.has(key)) { repeats += 1; continue; }
    seen.add(key);
    files.push({ file: f, key });
  }
  const limit = state.card.limits.max_files;
  const errors = [];
  let ok = 0, done = 0;
  for (let start = 0; start < files.length; start += limit) {
    const batch = files.slice(start, start + limit);
    $("#status").textContent = `Classifying ${files.length} image(s)… ${done} done`;
    const form = new FormData();
    batch.forEach(({ file }) => form.append("files", file, file.name));
    let body, resp;
    try {
      resp = await fetch("/api/predict", { method: "POST", body: form });
      body = await resp.json();
    } catch (err) {
      errors.push(`The server did not answer: ${err}`);
      break;
    }
    done += batch.length;
    if (!resp.ok) {
      errors.push(...(body.errors && body.errors.length ? body.errors.map((e) => e.error)
        : [`${body.detail} (HTTP ${resp.status})`]));
      continue;
    }
    if (body.colour && body.colour.far) { // a batch unlike the training images' colours
      $("#colour-warning").textContent = body.colour.message;
      $("#colour-warning").hidden = false;
    }
    const added = [];
    body.results.forEach((r, i) => { // results come in the order the files were sent
      if (r.error) { errors.push(r.error); return; }
      const { file, key } = batch[i];
      const seq = state.cells.length ? state.cells[state.cells.length - 1].seq + 1 : 0;
      const cell = { key, seq, file: r.file, blob: file, url: URL.createObjectURL(file),
        model: r.class, probability: r.probability, probabilities: r.probabilities,
        review: r.review, warning: r.warning, reviewed: null, inference: body.inference };
      state.cells.push(cell);
      added.push(cell);
      $("#cells").append(renderCell(cell));
    });
    ok += added.length;
    renderDifferential();
    await saveCells(added);
  }
  showErrors(errors);
  const skipped = repeats ? `${repeats} already on the page (same content) skipped.` : "";
  $("#status").textContent = files.length
    ? `Classified ${ok} of ${files.length} image(s).${skipped ? " " + skipped : ""}`
    : `Nothing new: ${skipped}`;
  renderDifferential();
}

function csvField(v) { return /[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v; }

function downloadCsv() {
  // reviewed_class is what a person decided and stays empty for cells nobody confirmed or
  // re-assigned: `hemacnn evaluate --data FILE.csv` scores only the reviewed rows, so the
  // model's own calls never pass for ground truth. Paths are relative to the CSV's folder.
  // The last columns say how each cell's probability was computed (as predict's CSV does).
  const rows = [["path", "class", "model_class", "reviewed_class", "probability", ...INFERENCE_FIELDS]];
  state.cells.forEach((c) => rows.push([c.file, currentClass(c), c.model, c.reviewed || "",
    c.probability.toFixed(6), ...INFERENCE_FIELDS.map((k) => (c.inference || {})[k] || "")]));
  const text = rows.map((r) => r.map(csvField).join(",")).join("\n") + "\n";
  const a = el("a", { href: URL.createObjectURL(new Blob([text], { type: "text/csv" })),
    download: "reviewed_labels.csv" });
  document.body.append(a);
  a.click();
  a.remove();
  setUnsaved(false);
}

async function clearAll() {
  const reviewed = state.cells.filter((c) => c.reviewed).length;
  if (!window.confirm(`Remove all ${state.cells.length} cells and your review of ${reviewed} ` +
      "from this page and this browser? Download the CSV first to keep it.")) return;
  const ids = state.cells.map((c) => record(c).id);
  await storeTx("readwrite", (s) => { ids.forEach((id) => s.delete(id)); return {}; });
  state.cells = []; $("#cells").replaceChildren(); $("#errors").replaceChildren();
  $("#status").textContent = ""; $("#saved").textContent = "";
  $("#colour-warning").hidden = true;
  setUnsaved(false);
  renderDifferential();
}

function setup() {
  const drop = $("#drop");
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault(); drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault(); drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (e) => upload(e.dataTransfer.files));
  $("#file-input").addEventListener("change", (e) => {
    upload(Array.from(e.target.files)); e.target.value = "";
  });
  $("#download").addEventListener("click", downloadCsv);
  $("#clear").addEventListener("click", clearAll);
  window.addEventListener("beforeunload", (e) => {
    if (!state.unsaved) return;
    e.preventDefault(); // the browser asks before leaving with review work not downloaded
    e.returnValue = "";
  });
  loadModel();
}

setup();
