// The detector's page: upload images, show the verdict and P(AI) against the threshold; for an image it judged,
// Grad-CAM beside it on request.
// Plain JavaScript, no libraries, URLs relative to the page (so it works behind a proxy under a sub-path).
"use strict";

const picker = document.getElementById("picker");
const drop = document.getElementById("drop");
const results = document.getElementById("results");
const statusLine = document.getElementById("status");
const files = new WeakMap();  // card -> the File it shows, to ask for its Grad-CAM later
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
}

// Why a file was refused, in plain words (the API's `reason` codes; `error` keeps the technical detail).
function refusal(result) {
  const limits = model || {};
  const words = {
    too_small: `the image is smaller than ${limits.min_image_side} pixels on a side`,
    not_an_image: "this file is not an image",
    unsupported_format: "this image format is not accepted: use JPEG, PNG, WebP, GIF, BMP or TIFF",
    empty: "the file is empty",
    truncated: "the file ends before the image does (an incomplete download or copy?)",
    undecodable: "the image data is damaged and cannot be decoded",
    decompression_bomb: "the image has far more pixels than any photo",
    too_large: `the file is larger than ${limits.max_upload_mb} MB`,
    too_many_pixels: `the image has more than ${limits.max_megapixels} million pixels`,
  }[result.reason];
  return words ? `${words[0].toUpperCase()}${words.slice(1)}.` : result.error;
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
  card.querySelector(".explain").addEventListener("click", () => explain(card));
  files.set(card, file);
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
    detail.textContent = refusal(result);
    detail.title = `${result.filename}: ${result.error}`;
    bar.hidden = true;
    card.querySelector(".bar-ends").hidden = true;
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
  const label = card.querySelector(".threshold-label");
  label.textContent = `threshold ${result.threshold.toFixed(2)}`;
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
  // Where it looked, for a judged image only: on an unfamiliar one the map would explain a score that means little.
  card.querySelector(".explain").hidden = !(model && model.explain) || kind === "unfamiliar";
}

// Grad-CAM for an image already checked: one more request, for that image alone (a second pass of the model).
async function explain(card) {
  const button = card.querySelector(".explain");
  button.disabled = true;
  button.textContent = "Looking…";
  const form = new FormData();
  const file = files.get(card);
  form.append("file", file, file.name);
  try {
    const response = await fetch("v1/predict?explain=true", { method: "POST", body: form, headers: authHeaders() });
    const body = await response.json();
    const result = body.results && body.results[0];
    if (!result || !result.heatmap) throw new Error((result && result.heatmap_note) || body.detail || `HTTP ${response.status}`);
    const figure = card.querySelector(".heatmap-figure");
    const img = figure.querySelector("img");
    img.src = result.heatmap;
    img.alt = `Where the model saw signs of AI in ${file.name}`;
    figure.hidden = false;
    button.hidden = true;
  } catch (error) {
    button.disabled = false;
    button.textContent = "Show where the model looked";
    statusLine.textContent = `No Grad-CAM: ${error.message || error}`;
  }
}

async function check(files) {
  if (!files.length) return;
  const cards = files.map(addCard);
  const form = new FormData();
  files.forEach((file) => form.append("file", file, file.name));
  statusLine.textContent = `Checking ${files.length} image${files.length > 1 ? "s" : ""}…`;
  try {
    // Grad-CAM costs a second pass of the model: asked for later, per image (the card's button).
    const response = await fetch("v1/predict?explain=false", { method: "POST", body: form, headers: authHeaders() });
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
keyInput.addEventListener("change", () => {
  apiKey = keyInput.value.trim();
  sessionStorage.setItem("ttp-api-key", apiKey);
  loadModel().catch((error) => { statusLine.textContent = `Cannot reach the model: ${error}`; });
});
loadModel().catch((error) => { statusLine.textContent = `Cannot reach the model: ${error}`; });
