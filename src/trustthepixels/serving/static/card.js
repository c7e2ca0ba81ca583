// The detector's card: what /v1/model says, as a page (with the API key this tab was given, if the server has one).
"use strict";

const body = document.getElementById("card-body");
const statusLine = document.getElementById("status");
const apiKey = sessionStorage.getItem("ttp-api-key") || "";

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function section(title, rows) {
  body.append(element("h2", title));
  const table = element("table");
  rows.filter(([, value]) => value !== undefined && value !== null && value !== "").forEach(([name, value]) => {
    const row = table.insertRow();
    row.append(element("th", name), element("td", String(value)));
  });
  body.append(table);
}

function withInterval(metrics, key) {
  const value = metrics[key];
  if (value === undefined) return undefined;
  const low = metrics[`${key}_lo`], high = metrics[`${key}_hi`];
  return value.toFixed(3) + (low === undefined ? "" : ` [${low.toFixed(3)}, ${high.toFixed(3)}]`);
}

async function load() {
  const response = await fetch("../v1/model", { headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {} });
  if (response.status === 401) {
    statusLine.textContent = "This server needs its API key: enter it on the main page first.";
    return;
  }
  const model = await response.json();
  statusLine.textContent = `${model.backbone}, served from ${model.model_file} (${model.backend} backend)`;
  if (model.warning) body.append(element("p", model.warning, "warning"));
  const trained = Array.isArray(model.trained_on) ? model.trained_on.join(", ") : model.trained_on;
  section("What it is", [
    ["Backbone", model.backbone],
    ["Trained on", trained || "not recorded"],
    ["Output", "one logit per image; P(AI) = sigmoid(logit)"],
    ["Labels", Object.entries(model.labels).map(([k, v]) => `${k} = ${v}`).join(", ")],
  ]);
  const sets = model.abstain;
  section("How it decides", [
    ["Threshold", `AI when P(AI) > ${model.threshold.toFixed(4)}`],
    ["Where the threshold comes from", model.threshold_source],
    ["Can't tell", sets ? `when its ${Math.round(100 * (1 - sets.alpha))}% prediction set holds both labels or none` : "never (abstention off)"],
    ["Unfamiliar", model.familiar_min === null || model.familiar_min === undefined ? "never (no familiarity cutoff)"
      : `when fewer than ${(100 * model.familiar_min).toFixed(0)}% of its calibration images are as far from its training images`],
  ]);
  const val = model.val_metrics || {};
  section("Validation (95% intervals)", [
    ["AUROC", withInterval(val, "val/auroc")],
    ["Average precision", withInterval(val, "val/ap")],
    ["Accuracy at 0.5", withInterval(val, "val/acc")],
    ["Images", val["val/images"] === undefined ? undefined : Math.round(val["val/images"])],
  ]);
  const size = model.input_size;
  section("What it accepts", [
    ["Input", `${Array.isArray(size) ? size.slice(-2).join(" x ") : size} px after resizing, RGB`],
    ["Smallest side", `${model.min_image_side} pixels`],
    ["Largest upload", `${model.max_upload_mb} MB a file, ${model.max_files} files a request`],
    ["Largest image", `${model.max_megapixels} megapixels`],
  ]);
  body.append(element("p", "A score, not proof: its errors are measured above and they are not rare. Do not use it " +
    "as the only evidence about a person, nor on images unlike its training data without reading the " +
    "'unfamiliar' verdicts.", "muted"));
}

load().catch((error) => { statusLine.textContent = `Cannot reach the model: ${error}`; });
