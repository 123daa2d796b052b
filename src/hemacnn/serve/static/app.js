// hemacnn review page: upload cells, show the model's call, let a person re-assign it,
// keep the differential count current, and download the reviewed labels as CSV.
"use strict";

const state = { card: null, cells: [] };
const Z = 1.959963984540054; // two-sided 95% normal quantile, as in hemacnn.metrics

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

function wilson(k, n) { // Wilson score interval, the same formula as the evaluation
  if (n === 0) return null;
  const p = k / n, d = 1 + Z * Z / n;
  const c = (p + Z * Z / (2 * n)) / d;
  const h = Z * Math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / d;
  return [Math.max(0, c - h), Math.min(1, c + h)];
}

async function loadModel() {
  const card = await (await fetch("/api/model")).json();
  card.names = {};
  card.classes.forEach((c, i) => { card.names[c] = (card.class_names || card.classes)[i]; });
  state.card = card;
  $("#model-info").textContent =
    `Model ${card.arch.name} · ${card.input_size} px · classes: ` +
    card.classes.map(label).join(", ") +
    ` · cells with top probability below ${card.review_below} are flagged for review`;
  $("#who-note").hidden = !card.classes.includes("BLA");
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
  const changed = state.cells.filter((c) => c.reviewed && c.reviewed !== c.model).length;
  $("#diff-summary").textContent = n
    ? `${n} cells · ${flagged} flagged for review · ${changed} re-assigned by you`
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

function renderCell(cell) {
  const pred = el("div", { class: "pred" }, el("span", { class: "code", text: cell.model }),
    el("span", { text: state.card.names[cell.model] }),
    el("span", { class: "prob muted", text: `  ${(100 * cell.probability).toFixed(1)}%` }));
  if (cell.review) pred.append(el("span", { class: "badge review", text: "review" }));
  if (cell.warning) pred.append(el("span", { class: "badge warn", text: "suspicious", title: cell.warning }));
  const select = el("select", { "aria-label": `class of ${cell.file}`, class: "reassign" });
  state.card.classes.forEach((c) => {
    const o = el("option", { value: c, text: label(c) });
    if (c === currentClass(cell)) o.selected = true;
    select.append(o);
  });
  const imgs = el("div", { class: "imgs" }, el("img", { src: cell.url, alt: cell.file }));
  const heat = el("button", { class: "secondary heat", text: "Heat map" });
  heat.addEventListener("click", () => showHeatMap(cell, imgs, heat));
  const box = el("div", { class: "cell" + (cell.review ? " review" : ""), "data-file": cell.file },
    imgs, el("div", { class: "fname", text: cell.file, title: cell.file }), pred,
    bars(cell.probabilities, cell.model), el("div", { class: "actions" }, select, heat));
  select.addEventListener("change", () => {
    cell.reviewed = select.value;
    box.classList.toggle("reassigned", cell.reviewed !== cell.model);
    renderDifferential();
  });
  return box;
}

async function showHeatMap(cell, imgs, button) {
  button.disabled = true;
  const form = new FormData();
  form.append("file", cell.blob, cell.file);
  const resp = await fetch("/api/explain", { method: "POST", body: form });
  if (!resp.ok) {
    showErrors([(await resp.json()).detail]);
    button.disabled = false;
    return;
  }
  const url = URL.createObjectURL(await resp.blob());
  imgs.append(el("img", { src: url, alt: `heat map of ${cell.file}`, class: "heatmap",
    title: `Grad-CAM for ${resp.headers.get("X-Class")}` }));
}

function showErrors(messages) {
  const ul = $("#errors");
  messages.forEach((m) => ul.append(el("li", { text: m })));
}

async function upload(fileList) {
  const files = Array.from(fileList);
  if (!files.length) return;
  $("#status").textContent = `Classifying ${files.length} image(s)…`;
  $("#errors").replaceChildren();
  const form = new FormData();
  files.forEach((f) => form.append("files", f, f.name));
  let body;
  try {
    const resp = await fetch("/api/predict", { method: "POST", body: form });
    body = await resp.json();
    if (!resp.ok) {
      showErrors(body.errors && body.errors.length ? body.errors.map((e) => e.error) : [body.detail]);
      $("#status").textContent = `No image could be classified (HTTP ${resp.status}).`;
      return;
    }
  } catch (err) {
    showErrors([`The server did not answer: ${err}`]);
    $("#status").textContent = "";
    return;
  }
  const byName = new Map(files.map((f) => [f.name, f]));
  const errors = [];
  for (const r of body.results) {
    if (r.error) { errors.push(r.error); continue; }
    const blob = byName.get(r.file);
    const cell = { file: r.file, blob, url: URL.createObjectURL(blob), model: r.class,
      probability: r.probability, probabilities: r.probabilities, review: r.review,
      warning: r.warning, reviewed: null };
    state.cells.push(cell);
    $("#cells").append(renderCell(cell));
  }
  showErrors(errors);
  const ok = body.results.length - errors.length;
  $("#status").textContent = `Classified ${ok} of ${body.results.length} image(s).`;
  renderDifferential();
}

function csvField(v) { return /[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v; }

function downloadCsv() {
  // path,class,model_class,reviewed_class: `hemacnn evaluate --data FILE.csv` reads path and
  // reviewed_class, with paths relative to the CSV's folder (save it beside the images).
  const rows = [["path", "class", "model_class", "reviewed_class", "probability"]];
  state.cells.forEach((c) => rows.push([c.file, currentClass(c), c.model, currentClass(c),
    c.probability.toFixed(6)]));
  const text = rows.map((r) => r.map(csvField).join(",")).join("\n") + "\n";
  const a = el("a", { href: URL.createObjectURL(new Blob([text], { type: "text/csv" })),
    download: "reviewed_labels.csv" });
  document.body.append(a);
  a.click();
  a.remove();
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
  $("#file-input").addEventListener("change", (e) => { upload(e.target.files); e.target.value = ""; });
  $("#download").addEventListener("click", downloadCsv);
  $("#clear").addEventListener("click", () => {
    state.cells = []; $("#cells").replaceChildren(); $("#errors").replaceChildren();
    $("#status").textContent = ""; renderDifferential();
  });
  loadModel();
}

setup();
