// The API reference, rendered from /openapi.json in the browser: every path, its parameters, its answers, and a
// curl line to try it.
"use strict";

const body = document.getElementById("api-body");

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function resolve(schema, ref) {
  return ref.replace(/^#\//, "").split("/").reduce((node, key) => node[key], schema);
}

function formFields(spec, operation) {
  const content = operation.requestBody && operation.requestBody.content;
  if (!content) return [];
  const [type, media] = Object.entries(content)[0];
  const schema = media.schema.$ref ? resolve(spec, media.schema.$ref) : media.schema;
  return Object.entries(schema.properties || {}).map(([name, field]) =>
    [name, `${type} field${(schema.required || []).includes(name) ? ", required" : ""}`, field.description || ""]);
}

async function load() {
  const spec = await (await fetch("../openapi.json")).json();
  body.replaceChildren();
  body.append(element("p", `${spec.info.title} ${spec.info.version}: ${spec.info.summary || ""}`));
  const base = new URL("..", window.location.href).href.replace(/\/$/, "");
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, operation] of Object.entries(methods)) {
      body.append(element("h2", `${method.toUpperCase()} ${path}`));
      if (operation.summary) body.append(element("p", operation.summary));
      if (operation.description) body.append(element("p", operation.description, "muted"));
      const rows = (operation.parameters || []).map((p) =>
        [p.name, `${p.in}${p.required ? ", required" : ""}`, p.description || ""]).concat(formFields(spec, operation));
      if (rows.length) {
        const table = element("table");
        const head = table.createTHead().insertRow();
        ["parameter", "where", "meaning"].forEach((title) => head.append(element("th", title)));
        rows.forEach((cells) => { const row = table.insertRow(); cells.forEach((c) => row.append(element("td", c))); });
        body.append(table);
      }
      const answers = Object.entries(operation.responses || {}).map(([code, r]) => `${code} ${r.description}`);
      body.append(element("p", `Answers: ${answers.join("; ")}`, "muted"));
      const curl = method === "post" ? `curl -s -F file=@photo.jpg ${base}${path}` : `curl -s ${base}${path}`;
      body.append(element("pre", curl));
    }
  }
}

load().catch((error) => { body.textContent = `Cannot read the schema: ${error}`; });
