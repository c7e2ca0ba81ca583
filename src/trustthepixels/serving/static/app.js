// The detector's page: upload images, show P(AI) against the threshold, the verdict, an optional Grad-CAM.
// Plain JavaScript, no libraries, URLs relative to the page (so it works behind a proxy under a sub-path).
"use strict";

const picker = document.getElementById("picker");
const drop = document.getElementById("drop");
const results = document.getElementById("results");
const statusLine = document.getElementById("status");
const toggle = document.getElementById("heatmap-toggle");
const keyBox = document.getElementById("key-box");
const keyInput = document.getElementById("api-key");
let model = null;
let apiKey = sessionStorage.getItem("ttp-api-key") || "";

// A server started with an API key answers 401 until the page sends it (kept for this tab only).
function authHeaders() { return apiKey ? { Authorization: `Bearer ${apiKey}` } : {}; }

async function loadModel() {
  const response = await fetch("v1/model", { headers: authHeaders() });
  if (response.status === 401) {
    keyBox.hidden = false;
    statusLine.textContent = "This server needs its API key.";
    return;
  }
  keyBox.hidden = true;
  statusLine.textContent = "";
  model = await response.json();
  const auroc = model.val_metrics["val/auroc"];
  document.getElementById("model-line").textContent =
    `${model.backbone} (${model.backend}), threshold ${model.threshold.toFixed(3)}` +
    (auroc === undefined ? "" : `, validation AUROC ${auroc.toFixed(3)}`);
  document.getElementById("max-mb").textContent = model.max_upload_mb;
  const warning = document.getElementById("model-warning");
  warning.textContent = model.warning || "";
  warning.hidden = !model.warning;
  if (!model.explain) {
    toggle.disabled = true;
    toggle.parentElement.title = "This model has no Grad-CAM (ONNX backend, or no spatial features)";
  }
}

function percent(p) { return `${(100 * p).toFixed(1)}%`; }

function addCard(file) {
  const card = document.getElementById("card").content.firstElementChild.cloneNode(true);
  const img = card.querySelector(".preview");
  img.src = URL.createObjectURL(file);
  img.alt = `Uploaded image ${file.name}`;
  img.addEventListener("error", () => {  // not an image the browser can show: say so instead of a broken icon
    if (img.src.startsWith("data:")) return;
    img.hidden = true;
    img.closest("figure").classList.add("no-preview");
  });
  card.querySelector(".name").textContent = file.name;
  card.querySelector(".verdict").textContent = "Checking…";
  results.prepend(card);
  return card;
}

function showResult(card, result) {
  const verdict = card.querySelector(".verdict");
  const bar = card.querySelector(".bar");
  const detail = card.querySelector(".detail");
  if (result.error) {
    card.dataset.state = "error";
    verdict.className = "verdict error";
    verdict.textContent = "Cannot check this file";
    detail.textContent = `${result.filename}: ${result.error}`;
    bar.hidden = true;
    return;
  }
  // The server's verdict: AI, Real, uncertain (it cannot tell) or unfamiliar (unlike its training images).
  const kind = { AI: "ai", Real: "real", uncertain: "uncertain", unfamiliar: "unfamiliar" }[result.verdict] ||
    "uncertain";
  card.dataset.state = kind;
  verdict.className = `verdict ${kind}`;
  verdict.textContent = {
    ai: "Likely AI-generated",
    real: "Likely real",
    uncertain: "Can't tell",
    unfamiliar: "Unlike the images this detector learned from",
  }[kind];
  card.querySelector(".fill").style.width = percent(result.p_ai);
  card.querySelector(".threshold").style.left = `calc(${percent(result.threshold)} - 1px)`;
  bar.setAttribute("aria-label", `P(AI) ${percent(result.p_ai)}; threshold ${percent(result.threshold)}`);
  detail.textContent = `P(AI) = ${result.p_ai.toFixed(3)} (AI above ${result.threshold.toFixed(3)}) · ` +
    `${result.timing_ms.total.toFixed(0)} ms`;
  if (kind === "uncertain") {
    detail.textContent = `P(AI) = ${result.p_ai.toFixed(3)}. The detector has no basis for a verdict here: ` +
      "on the images it was checked on, scores like this one came from real and AI-generated images alike.";
  }
  if (kind === "unfamiliar") {
    detail.textContent = `P(AI) = ${result.p_ai.toFixed(3)}, but this image is further from everything the ` +
      "detector was trained on than almost every image it was checked on, so its score means little here.";
  }
  if (result.heatmap) {
    const img = card.querySelector(".preview");
    card.dataset.original = img.src;
    card.dataset.heatmap = result.heatmap;
    applyHeatmap(card);
  }
}

function applyHeatmap(card) {
  if (!card.dataset.heatmap) return;
  const img = card.querySelector(".preview");
  img.src = toggle.checked ? card.dataset.heatmap : card.dataset.original;
  img.classList.toggle("heatmap", toggle.checked);
}

async function check(files) {
  if (!files.length) return;
  const cards = files.map(addCard);
  const form = new FormData();
  files.forEach((file) => form.append("file", file, file.name));
  statusLine.textContent = `Checking ${files.length} image${files.length > 1 ? "s" : ""}…`;
  try {
    // Grad-CAM costs a second pass of the model: asked for only when the box is ticked.
    const explain = Boolean(model && model.explain && toggle.checked);
    const response = await fetch(`v1/predict?explain=${explain}`, { method: "POST", body: form, headers: authHeaders() });
    const body = await response.json();
    if (!body.results) throw new Error(body.detail || `HTTP ${response.status}`);
    body.results.forEach((result, i) => showResult(cards[i], result));
    const bad = body.results.filter((r) => r.error).length;
    statusLine.textContent = `Done: ${body.results.length - bad} checked` + (bad ? `, ${bad} could not be read` : "");
  } catch (error) {
    cards.forEach((card) => showResult(card, { filename: card.querySelector(".name").textContent, error: String(error.message || error) }));
    statusLine.textContent = "The server could not check these images.";
  }
}

picker.addEventListener("change", () => { check([...picker.files]); picker.value = ""; });
["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (event) => {
  event.preventDefault(); drop.classList.add("over");
}));
["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
drop.addEventListener("drop", (event) => { event.preventDefault(); check([...event.dataTransfer.files]); });
toggle.addEventListener("change", () => results.querySelectorAll(".card").forEach(applyHeatmap));
keyInput.addEventListener("change", () => {
  apiKey = keyInput.value.trim();
  sessionStorage.setItem("ttp-api-key", apiKey);
  loadModel().catch((error) => { statusLine.textContent = `Cannot reach the model: ${error}`; });
});
loadModel().catch((error) => { statusLine.textContent = `Cannot reach the model: ${error}`; });
