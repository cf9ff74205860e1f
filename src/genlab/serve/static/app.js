// genlab's page: pick a served model, then use whichever of its routes it answers (docs/serving.md).
"use strict";

const $ = (sel) => document.querySelector(sel);
const SECTIONS = {images: "#images-section", interpolate: "#walk-section", text: "#text-section",
                  translate: "#translate-section", classify: "#classify-section", audio: "#audio-section",
                  music: "#music-section", video: "#video-section", image2image: "#image2image-section"};
const WALK_FRAMES = 11;
let models = [];
let model = null;          // the chosen model's info
let walkRequest = 0;       // only the latest latent walk's answer is shown

function el(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

// ---- errors ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }
}

function showError(err) {
  const box = $("#error");
  box.replaceChildren();
  document.querySelectorAll(".invalid").forEach((n) => n.classList.remove("invalid"));
  if (!err) { box.hidden = true; return; }
  const detail = err instanceof ApiError ? err.detail : String(err.message || err);
  const status = err instanceof ApiError && err.status ? `Error ${err.status}` : "Error";
  box.append(el("strong", {textContent: status + ": "}));
  if (Array.isArray(detail)) {          // validation errors: [{loc: ["body", field], msg}, ...]
    const list = el("ul");
    for (const item of detail) {
      const loc = (item.loc || []).filter((part) => part !== "body");
      const field = loc.join(".") || "request";
      list.append(el("li", {}, [el("code", {className: "field", textContent: field}), `: ${item.msg}`]));
      document.querySelectorAll(`section:not([hidden]) [data-field="${loc[0]}"]`)
        .forEach((n) => n.classList.add("invalid"));
    }
    box.append(list);
  } else {
    box.append(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  box.hidden = false;
}

async function failure(resp) {
  let detail = `${resp.status} ${resp.statusText}`;
  try { detail = (await resp.json()).detail ?? detail; } catch (_) { /* not JSON */ }
  return new ApiError(resp.status, detail);
}

async function post(route, body, headers = {}) {
  const resp = await fetch(`/v1/models/${encodeURIComponent(model.name)}/${route}`, {
    method: "POST", headers: {"Content-Type": "application/json", ...headers}, body: JSON.stringify(body)});
  if (!resp.ok) throw await failure(resp);
  return resp;
}

// Runs a form's action with its button disabled; any failure lands in the error box.
async function busy(button, action) {
  showError(null);
  button.disabled = true;
  document.body.setAttribute("aria-busy", "true");
  try { await action(); } catch (err) { showError(err); } finally {
    button.disabled = false;
    document.body.removeAttribute("aria-busy");
  }
}

// ---- controls rendered from the model's `controls` dict ----------------------------------------

function controlInput(name, spec) {
  let input;
  if (spec.type === "choice" || name === "beam") {    // beam: a short list of widths, not a number box
    const values = spec.choices || [...new Set([1, 2, 3, 4, 6, 8, spec.default])]
      .filter((v) => v >= (spec.min ?? 1) && v <= (spec.max ?? 8)).sort((a, b) => a - b);
    input = el("select", {}, values.map((v) => el("option", {value: v, textContent: v})));
    input.value = spec.default;
    input.choices = values;
  } else {
    input = el("input", {type: "number", value: spec.default ?? "", step: spec.type === "float" ? "any" : "1"});
    if (spec.min !== undefined && spec.min !== null) input.min = spec.min;
    if (spec.max !== undefined && spec.max !== null) input.max = spec.max;
  }
  input.defaultChoice = spec.default ?? "";
  Object.assign(input.dataset, {field: name, control: name, type: spec.type});
  input.id = `ctl-${name}`;
  return el("label", {}, [`${name} `, input]);
}

// Only the controls moved off their default are sent: the server applies the same defaults itself.
function controlValues(container) {
  const out = {};
  for (const input of container.querySelectorAll("[data-control]")) {
    if (input.value === "" || input.value === String(input.defaultChoice)) continue;
    const type = input.dataset.type;
    out[input.dataset.control] = input.choices ? input.choices.find((c) => String(c) === input.value)
      : type === "int" ? parseInt(input.value, 10) : type === "float" ? parseFloat(input.value) : input.value;
  }
  return out;
}

// label_required: a conditional ae/vae decodes with a class, so it gets no "none" option.
function fillLabels(select, classes, none) {
  select.replaceChildren(...(none ? [el("option", {value: "", textContent: "none"})] : []),
    ...classes.map((c, i) => el("option", {value: i, textContent: c})));
}

const labelValue = (select) => (select.value === "" ? null : parseInt(select.value, 10));
const intValue = (sel) => parseInt($(sel).value, 10);

// ---- model picker ------------------------------------------------------------------------------

function chooseModel(name) {
  model = models.find((m) => m.name === name);
  showError(null);
  const routes = new Set(model.routes);
  for (const [route, sel] of Object.entries(SECTIONS)) $(sel).hidden = !routes.has(route);
  const labels = model.conditioning === "labels";
  document.querySelectorAll(".if-labels").forEach((n) => { n.hidden = !labels; });
  const none = !model.label_required;
  fillLabels($("#label"), labels ? model.classes : [], none);
  fillLabels($("#walk-label"), labels ? model.classes : [], none);
  fillLabels($("#audio-label"), labels ? model.classes : [], none);
  fillLabels($("#video-label"), labels ? model.classes : [], none);
  const controls = Object.entries(model.controls || {}).map(([k, spec]) => controlInput(k, spec));
  const target = routes.has("images") ? "#image-controls" : routes.has("text") ? "#text-controls"
    : routes.has("translate") ? "#translate-controls" : routes.has("audio") ? "#audio-controls"
    : routes.has("music") ? "#music-controls" : routes.has("video") ? "#video-controls"
    : routes.has("image2image") ? "#i2i-controls" : null;
  for (const sel of ["#image-controls", "#text-controls", "#translate-controls", "#audio-controls",
                     "#music-controls", "#video-controls", "#i2i-controls"]) {
    $(sel).replaceChildren(...(sel === target ? controls : []));
  }
  const metrics = Object.entries(model.metrics || {}).filter(([, v]) => typeof v === "number")
    .slice(0, 4).map(([k, v]) => `${k} ${+v.toPrecision(4)}`);
  $("#model-info").textContent = [model.family, model.dataset, model.conditioning, ...metrics].join(" · ");
  for (const sel of ["#grid", "#classify-probs", "#classify-tokens", "#text-prompt", "#text-completion",
                     "#audio-clips", "#music-pieces"]) {
    $(sel).replaceChildren();
  }
  for (const sel of ["#provenance", "#translation", "#classify-label", "#text-info", "#walk-frame",
                     "#walk-provenance", "#audio-provenance", "#music-provenance", "#video-provenance",
                     "#i2i-provenance"]) {
    $(sel).textContent = "";
  }
  $("#walk-image").removeAttribute("src");
  $("#audio-spectrogram").hidden = true;
  $("#music-roll").hidden = true;
  for (const sel of ["#video-gif", "#video-mp4", "#video-filmstrip", "#i2i-input", "#i2i-output"]) {
    $(sel).hidden = true;
  }
  if (routes.has("interpolate")) loadWalk();
  showGeneric(model.routes.filter((r) => !(r in SECTIONS)));
}

// ---- a route without a panel of its own (a new kind's): a form built from its request schema ----

let openapi = null;

async function requestDefaults(route) {
  openapi = openapi || await (async () => {
    const resp = await fetch("/openapi.json");
    if (!resp.ok) throw await failure(resp);
    return resp.json();
  })();
  const op = openapi.paths[`/v1/models/{name}/${route}`].post;
  const ref = op.requestBody.content["application/json"].schema.$ref;
  const props = openapi.components.schemas[ref.split("/").pop()].properties || {};
  // every field: its default, or null where the schema gives none (an optional field, or one to fill in)
  return Object.fromEntries(Object.entries(props).map(([k, p]) => [k, "default" in p ? p.default : null]));
}

function showGeneric(routes) {
  $("#generic-section").hidden = routes.length === 0;
  $("#generic-route").replaceChildren(...routes.map((r) => el("option", {value: r, textContent: r})));
  $("#generic-output").textContent = "";
  $("#generic-images").replaceChildren();
  if (routes.length) fillGeneric();
}

async function fillGeneric() {
  const route = $("#generic-route").value;
  $("#generic-title").textContent = `POST /v1/models/${model.name}/${route}`;
  try {
    $("#generic-body").value = JSON.stringify(await requestDefaults(route), null, 2);
  } catch (err) { showError(err); }
}

async function sendGeneric() {
  let body;
  try { body = JSON.parse($("#generic-body").value || "{}"); } catch (err) {
    throw new ApiError(0, [{loc: ["body"], msg: `not JSON: ${err.message}`}]);
  }
  const out = await (await post($("#generic-route").value, body)).json();
  // base64 PNGs (an "images" list) are shown as images; the rest of the answer as JSON
  $("#generic-images").replaceChildren(...(Array.isArray(out.images) ? out.images : [])
    .map((b64) => el("img", {src: png(b64), alt: "generated image"})));
  $("#generic-output").textContent = JSON.stringify({...out, images: out.images && `[${out.images.length} PNGs]`},
                                                    null, 2);
}

async function loadModels() {
  try {
    const resp = await fetch("/v1/models");
    if (!resp.ok) throw await failure(resp);
    models = (await resp.json()).models;
  } catch (err) { showError(err); return; }
  const picker = $("#model");
  picker.replaceChildren(...models.map((m) => el("option", {value: m.name, textContent: `${m.name} (${m.family})`})));
  picker.disabled = models.length === 0;
  if (models.length) chooseModel(models[0].name);
  document.body.dataset.ready = "true";
}

// ---- routes ------------------------------------------------------------------------------------

const png = (b64) => `data:image/png;base64,${b64}`;

function provenanceLine(p) {
  if (!p) return "";
  const hash = p["genlab:weights_sha256"] || "?";
  const ai = p["AI-Generated"] === "true" ? "AI-generated" : `AI-Generated: ${p["AI-Generated"]}`;
  return `${ai} · weights sha256 ${hash.slice(0, 16)}… · seed ${p["genlab:seed"] ?? "?"}`;
}

async function generateImages() {
  const body = {n: intValue("#n"), seed: intValue("#seed"), ...controlValues($("#image-controls"))};
  if (model.conditioning === "labels") body.label = labelValue($("#label"));
  const data = await (await post("images", body)).json();
  $("#grid").replaceChildren(...data.images.map((b64, i) =>
    el("img", {src: png(b64), alt: `sample ${i + 1}`, width: data.width, height: data.height})));
  $("#provenance").textContent = provenanceLine(data.provenance);
  $("#provenance").title = JSON.stringify(data.provenance, null, 1);
}

async function generateAudio() {
  const body = {n: intValue("#audio-n"), seed: intValue("#audio-seed"), ...controlValues($("#audio-controls"))};
  if (model.conditioning === "labels") body.label = labelValue($("#audio-label"));
  const data = await (await post("audio", body)).json();
  $("#audio-spectrogram").src = png(data.spectrogram);
  $("#audio-spectrogram").hidden = false;
  $("#audio-clips").replaceChildren(...data.clips.map((b64, i) => el("li", {}, [
    el("audio", {controls: true, preload: "auto", src: `data:audio/wav;base64,${b64}`,
                 title: `clip ${i + 1} (${data.seconds} s at ${data.sample_rate} Hz)`})])));
  $("#audio-provenance").textContent = provenanceLine(data.provenance);
  $("#audio-provenance").title = JSON.stringify(data.provenance, null, 1);
}

async function generateMusic() {
  const body = {n: intValue("#music-n"), seed: intValue("#music-seed"), tempo_bpm: parseFloat($("#music-tempo").value),
                prompt: $("#music-prompt").value, ...controlValues($("#music-controls"))};
  const data = await (await post("music", body)).json();
  $("#music-roll").src = png(data.piano_roll);
  $("#music-roll").hidden = false;
  $("#music-pieces").replaceChildren(...data.pieces.map((p, i) => el("li", {}, [
    el("audio", {controls: true, preload: "auto", src: `data:audio/wav;base64,${p.wav}`,
                 title: `piece ${i + 1}, rendered at ${data.sample_rate} Hz`}), " ",
    el("a", {href: `data:audio/midi;base64,${p.midi}`, download: `piece-${i + 1}.mid`, textContent: "MIDI"}), " ",
    el("details", {}, [el("summary", {textContent: `${p.text.split(" ").length} tokens`}),
                       el("code", {textContent: p.text})])])));
  $("#music-provenance").textContent = provenanceLine(data.provenance);
  $("#music-provenance").title = JSON.stringify(data.provenance, null, 1);
}

async function loadWalk() {
  const ticket = ++walkRequest;
  showError(null);
  const body = {seeds: [intValue("#walk-seed-a"), intValue("#walk-seed-b")], frames: WALK_FRAMES};
  if (model.conditioning === "labels") body.label = labelValue($("#walk-label"));
  try {
    const data = await (await post("interpolate", body)).json();
    if (ticket !== walkRequest) return;
    const slider = $("#walk-slider");
    slider.max = data.images.length - 1;
    slider.frames = data.images.map(png);
    $("#walk-provenance").textContent = provenanceLine(data.provenance);
    showFrame();
  } catch (err) { if (ticket === walkRequest) showError(err); }
}

function showFrame() {
  const slider = $("#walk-slider");
  if (!slider.frames) return;
  const i = Math.min(parseInt(slider.value, 10), slider.frames.length - 1);
  $("#walk-image").src = slider.frames[i];
  $("#walk-frame").textContent = `frame ${i + 1} of ${slider.frames.length}`;
}

// Server-sent events over a fetch() body: blocks separated by a blank line, `event:` and `data:` lines.
function parseEvent(block) {
  let type = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) type = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return data.length ? {type, data: JSON.parse(data.join("\n"))} : null;
}

async function generateText() {
  const body = {prompt: $("#prompt").value, seed: intValue("#text-seed"), stream: true,
                ...controlValues($("#text-controls"))};
  const out = $("#text-output"), completion = $("#text-completion");
  $("#text-prompt").textContent = body.prompt;
  completion.textContent = "";
  $("#text-info").textContent = "";
  for (const key of ["done", "completion", "streamed", "finish"]) delete out.dataset[key];
  const resp = await post("text", body, {Accept: "text/event-stream"});
  const reader = resp.body.getReader(), decoder = new TextDecoder();
  let buffer = "", streamed = "";
  for (;;) {
    const {value, done} = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), {stream: !done});
    const blocks = buffer.replace(/\r\n?/g, "\n").split("\n\n");
    buffer = done ? "" : blocks.pop();
    for (const event of blocks.map(parseEvent).filter(Boolean)) {
      if (event.type === "message") {
        streamed += event.data.text;
        completion.textContent = streamed;
      } else if (event.type === "error") {
        reader.cancel();
        throw new ApiError(0, event.data.detail);
      } else if (event.type === "done") {
        const r = event.data;
        Object.assign(out.dataset, {done: "true", completion: r.completion, streamed, finish: r.finish_reason});
        completion.textContent = r.completion;
        $("#text-info").textContent =
          `${r.tokens} tokens · finish: ${r.finish_reason} · ${provenanceLine(r.provenance)}`;
      }
    }
    if (done) break;
  }
  if (!out.dataset.done) throw new Error("the stream ended without a done event");
}

async function translate() {
  const body = {text: $("#translate-input").value, ...controlValues($("#translate-controls"))};
  const data = await (await post("translate", body)).json();
  $("#translation").textContent = data.translation;
}

async function classify() {
  const data = await (await post("classify", {text: $("#classify-input").value})).json();
  $("#classify-label").textContent = data.label;
  const top = Object.entries(data.probs).sort((a, b) => b[1] - a[1]).slice(0, 5);
  $("#classify-probs").replaceChildren(...top.map(([name, p]) => el("li", {}, [
    el("meter", {value: p, min: 0, max: 1}), ` ${name} ${(100 * p).toFixed(1)}%`])));
  const most = Math.max(...data.weights, 1e-12);
  $("#classify-tokens").replaceChildren(...data.tokens.map((tok, i) => {
    const w = data.weights[i];
    const span = el("span", {textContent: tok, title: w.toFixed(4)});
    span.dataset.weight = w;
    span.style.backgroundColor = `rgba(255, 120, 0, ${(w / most).toFixed(3)})`;
    return span;
  }));
}

// ---- wiring ------------------------------------------------------------------------------------

function onSubmit(form, button, action) {
  $(form).addEventListener("submit", (ev) => { ev.preventDefault(); busy($(button), action); });
}
async function generateVideo() {
  const body = {n: intValue("#video-n"), seed: intValue("#video-seed"), format: $("#video-format").value,
                ...controlValues($("#video-controls"))};
  if (model.conditioning === "labels") body.label = labelValue($("#video-label"));
  const data = await (await post("video", body)).json();
  const src = `data:${data.media_type};base64,${data.video}`;
  const gif = data.format === "gif";
  $("#video-gif").hidden = !gif;
  $("#video-mp4").hidden = gif;
  if (gif) $("#video-gif").src = src;
  else $("#video-mp4").src = src;
  $("#video-filmstrip").src = png(data.filmstrip);
  $("#video-filmstrip").hidden = false;
  $("#video-gif").title = `${data.n} clip(s), ${data.frames} frames at ${data.fps} fps`;
  $("#video-provenance").textContent = provenanceLine(data.provenance);
  $("#video-provenance").title = JSON.stringify(data.provenance, null, 1);
}

// ---- image to image: a canvas to draw on (white on black, as edge maps are) or to show an upload ----

function clearCanvas() {
  const ctx = $("#i2i-canvas").getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, ctx.canvas.width, ctx.canvas.height);
}

function wireCanvas() {
  const canvas = $("#i2i-canvas");
  const ctx = canvas.getContext("2d");
  let last = null;
  const at = (ev) => {
    const r = canvas.getBoundingClientRect();
    return [(ev.clientX - r.left) * canvas.width / r.width, (ev.clientY - r.top) * canvas.height / r.height];
  };
  canvas.addEventListener("pointerdown", (ev) => { last = at(ev); canvas.setPointerCapture(ev.pointerId); });
  canvas.addEventListener("pointermove", (ev) => {
    if (!last) return;
    const next = at(ev);
    Object.assign(ctx, {strokeStyle: "#fff", lineWidth: canvas.width / 32, lineCap: "round"});
    ctx.beginPath();
    ctx.moveTo(...last);
    ctx.lineTo(...next);
    ctx.stroke();
    last = next;
  });
  for (const type of ["pointerup", "pointercancel"]) canvas.addEventListener(type, () => { last = null; });
  $("#i2i-clear").addEventListener("click", clearCanvas);
  $("#i2i-file").addEventListener("change", async (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    const image = await createImageBitmap(file);
    clearCanvas();
    ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  });
  clearCanvas();
}

async function translateImage() {
  const body = {image: $("#i2i-canvas").toDataURL("image/png"), n: intValue("#i2i-n"), seed: intValue("#i2i-seed"),
                ...controlValues($("#i2i-controls"))};
  const data = await (await post("image2image", body)).json();
  $("#i2i-input").src = png(data.input);
  $("#i2i-output").src = png(data.png);
  $("#i2i-input").hidden = $("#i2i-output").hidden = false;
  $("#i2i-output").title = `${data.n} translation(s) at ${data.size}x${data.size}`;
  $("#i2i-provenance").textContent = provenanceLine(data.provenance);
  $("#i2i-provenance").title = JSON.stringify(data.provenance, null, 1);
}

document.addEventListener("DOMContentLoaded", () => {
  // opened as /?token=...: the server has set its cookie; keep the token out of the address bar and history
  if (new URLSearchParams(location.search).has("token")) history.replaceState(null, "", location.pathname);
  $("#model").addEventListener("change", (ev) => chooseModel(ev.target.value));
  onSubmit("#images-form", "#generate", generateImages);
  onSubmit("#text-form", "#generate-text", generateText);
  onSubmit("#translate-form", "#translate", translate);
  onSubmit("#classify-form", "#classify", classify);
  onSubmit("#generic-form", "#generic-send", sendGeneric);
  onSubmit("#audio-form", "#generate-audio", generateAudio);
  onSubmit("#music-form", "#generate-music", generateMusic);
  onSubmit("#video-form", "#generate-video", generateVideo);
  onSubmit("#image2image-form", "#translate-image", translateImage);
  wireCanvas();
  $("#generic-route").addEventListener("change", fillGeneric);
  $("#walk-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadWalk(); });
  for (const sel of ["#walk-seed-a", "#walk-seed-b", "#walk-label"]) $(sel).addEventListener("change", loadWalk);
  $("#walk-slider").addEventListener("input", showFrame);
  loadModels();
});
