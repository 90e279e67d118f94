// The page: ask /info what is served, send the chosen images to /embed (global + patch tokens,
// base64), then draw per image its PCA-RGB patch map, the global cosine-similarity matrix and, for
// the patch under the pointer (or the keyboard cursor), its similarity to every patch shown.
// For a video model (V-JEPA 2: grid [T', H', W']) videos are taken too, and the maps show the
// middle tubelet of each clip (an image's still clip is the same in every tubelet) beside the
// video's middle frame; the global embeddings and their similarities cover the whole clip.
// window.__jepaUi holds the numbers drawn, for tests and for anyone curious (open the console).
import { colormap, cosineMatrix, cosineTo, decodeFloat32, pca, toBytes, unitRows } from "./math.js";

const KEY = "jepa-api-key";
const $ = (id) => document.getElementById(id);
const ui = (window.__jepaUi = { status: "starting", info: null, colormap, heat: null, arrays });
let shown = null; // the current result: images, grid, unit patch vectors, offsets

class NeedKey extends Error {}

/** The decoded response behind what is shown (copied on demand): globals [n, D] and patches [M, D]. */
function arrays() {
  return shown && { globals: Array.from(shown.globals), patches: Array.from(shown.patches), dim: shown.d };
}

async function api(path, init = {}) {
  const key = sessionStorage.getItem(KEY);
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  const response = await fetch(path, { ...init, headers });
  if (response.status === 401) throw new NeedKey(key ? "The service refused this key." : "");
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error(body?.error?.message ?? `${path}: HTTP ${response.status}`);
  return body;
}

function askKey(message, retry) {
  const form = $("key-form");
  form.hidden = false;
  $("key-error").hidden = !message;
  $("key-error").textContent = message;
  sessionStorage.removeItem(KEY);
  $("key").focus();
  form.onsubmit = (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("key").value);
    form.hidden = true;
    retry();
  };
}

function fail(error, retry) {
  if (error instanceof NeedKey) return askKey(error.message, retry);
  ui.status = "error";
  ui.error = String(error.message ?? error);
  $("error").hidden = false;
  $("error").textContent = ui.error;
  $("status").textContent = "";
}

async function loadInfo() {
  try {
    const info = await api("info");
    ui.info = info;
    const b = info.backend;
    const clip = info.temporal ? ` · clips of ${info.temporal.frames_per_clip} frames` : "";
    $("model").textContent = `${info.model} · ${info.dim}-d · grid ${info.grid.join("×")} of ${info.patch_size} px ` +
      `patches${clip} · ${b.name} on ${b.device} (${b.dtype})`;
    if (info.temporal) {
      $("files").accept = "image/*,video/*";
      $("pick-label").textContent = "Drop images or videos here, or ";
    }
    if (ui.status === "starting") ui.status = "idle";
  } catch (error) {
    fail(error, loadInfo);
  }
}

async function embed(files) {
  const limit = ui.info?.limits?.max_images_per_request;
  if (limit && files.length > limit) return fail(new Error(`The service takes at most ${limit} files at once.`));
  $("error").hidden = true;
  ui.status = "loading";
  $("status").textContent = `Embedding ${files.length} ${noun(files.length)}…`;
  const form = new FormData();
  for (const file of files) form.append("image", file, file.name);
  try {
    const started = performance.now();
    const body = await api("embed?outputs=global,patch&encoding=base64", { method: "POST", body: form });
    ui.latencyMs = performance.now() - started;
    if (!ui.info) await loadInfo();
    await show(files, body);
  } catch (error) {
    fail(error, () => embed(files));
  }
}

function noun(count) {
  const kind = ui.info?.temporal ? "file" : "image";
  return count === 1 ? kind : `${kind}s`;
}

/** The response -> flat arrays: globals [n, D], patches [M, D] (all images' shown tokens in order).
 * A video model's grid is [T', H', W']: of each clip only the middle tubelet's H' x W' tokens are kept. */
function unpack(body) {
  const d = body.dim, n = body.data.length;
  const [rows, gw] = body.grid.slice(-2);
  const clips = body.grid.length === 3;
  const tubelet = clips ? Math.floor(body.grid[0] / 2) : 0;
  const tokens = rows * gw;
  const globals = new Float32Array(n * d);
  const patches = new Float32Array(n * tokens * d);
  body.data.forEach((item, i) => {
    globals.set(decodeFloat32(item.embedding), i * d);
    const all = decodeFloat32(item.patch_embeddings);
    patches.set(all.subarray(tubelet * tokens * d, (tubelet + 1) * tokens * d), i * tokens * d);
  });
  return { n, d, tokens, gw, rows, grid: body.grid, tubelet: clips ? tubelet : null, globals, patches };
}

async function show(files, body) {
  const r = unpack(body);
  $("status").textContent = "Computing the PCA of the patches…";
  await new Promise(requestAnimationFrame); // let that text show: a big model's PCA takes a moment
  const started = performance.now();
  const m = r.n * r.tokens;
  const p = pca(r.patches, m, r.d, 3);
  const colours = toBytes(p.projections, m, p.k);
  const similarity = cosineMatrix(r.globals, r.n, r.d);
  shown = { ...r, m, unit: unitRows(r.patches, m, r.d), files, query: null };
  ui.mathMs = performance.now() - started;
  Object.assign(ui, { grid: r.grid, tubelet: r.tubelet, count: r.n, tokens: r.tokens, similarity, heat: null });
  ui.pca = { ...p, mean: Array.from(p.mean), components: p.components.map((c) => Array.from(c)),
    projections: Array.from(p.projections), colours: Array.from(colours) };
  await drawCards(files, colours, p.k);
  drawSimilarity(similarity, files);
  const pct = p.explained.map((e) => `${(100 * e).toFixed(1)}%`).join(", ");
  const maps = r.tubelet === null ? "" : ` Maps: tubelet ${r.tubelet + 1} of ${r.grid[0]}, the middle of each clip.`;
  $("status").textContent = `${r.n} ${noun(r.n)} embedded in ${ui.latencyMs.toFixed(0)} ms ` +
    `(request round trip); PCA and similarities in the browser took ${ui.mathMs.toFixed(0)} ms. ` +
    `The three colour components explain ${pct} of the patch variance.${maps}`;
  $("heat-legend").textContent = "";
  $("results").hidden = false;
  ui.status = "ready";
}

async function drawCards(files, colours, k) {
  const cards = $("cards");
  cards.replaceChildren();
  for (let i = 0; i < files.length; i++) {
    const card = document.createElement("figure");
    card.className = "card";
    const view = mapBox("view", i, `Image ${i + 1} as the model sees it`);
    view.append(await photoCanvas(files[i]), pixelCanvas("heat", shown.gw, shown.rows));
    const map = mapBox("map", i, `Patch map of image ${i + 1}`);
    const pcaCanvas = pixelCanvas("pca", shown.gw, shown.rows);
    paint(pcaCanvas, (t) => rgbOf(colours, i * shown.tokens + t, k));
    map.append(pcaCanvas);
    const caption = document.createElement("figcaption");
    caption.textContent = `${i + 1}. ${files[i].name}`;
    card.append(view, map, caption);
    cards.append(card);
  }
}

function rgbOf(colours, row, k) {
  return [0, 1, 2].map((c) => (c < k ? colours[row * k + c] : 128));
}

function mapBox(kind, image, label) {
  const box = document.createElement("div");
  box.className = `box ${kind}`;
  box.tabIndex = 0;
  box.dataset.image = image;
  box.setAttribute("role", "img");
  box.setAttribute("aria-label", `${label}. Arrow keys pick a patch.`);
  const marker = document.createElement("div");
  marker.className = "marker";
  marker.hidden = true;
  box.append(marker);
  box.addEventListener("pointermove", (e) => e.pointerType === "mouse" && pointAt(box, e));
  box.addEventListener("click", (e) => pointAt(box, e));
  box.addEventListener("keydown", (e) => keyAt(box, e));
  box.addEventListener("focus", () => shown.query?.image !== image && setQuery(image, 0)); // keyboard: start here
  return box;
}

function pixelCanvas(kind, width, height) {
  const canvas = document.createElement("canvas");
  canvas.className = kind;
  canvas.width = width;
  canvas.height = height;
  canvas.dataset.cols = width;
  canvas.dataset.rows = height;
  return canvas;
}

function paint(canvas, rgb) {
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(canvas.width, canvas.height);
  for (let t = 0; t < canvas.width * canvas.height; t++) {
    img.data.set([...rgb(t), 255], 4 * t);
  }
  ctx.putImageData(img, 0, 0);
}

/** The picture cropped as the model's preprocessing crops it, so patches line up with the maps;
 * for a video, its middle frame (the middle tubelet of the centred clip the service embeds). */
async function photoCanvas(file) {
  const canvas = document.createElement("canvas");
  canvas.className = "photo";
  canvas.width = 320;
  canvas.height = Math.round((320 * shown.rows) / shown.gw);
  const ctx = canvas.getContext("2d");
  try {
    const picture = await pictureOf(file);
    const [sx, sy, sw, sh] = cropOf(picture.width, picture.height);
    ctx.drawImage(picture.source, sx, sy, sw, sh, 0, 0, canvas.width, canvas.height);
    picture.close();
  } catch (error) {
    ui.pictureErrors = [...(ui.pictureErrors ?? []), `${file.name}: ${error.message ?? error}`];
    ctx.fillStyle = "#888";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = "#fff";
    ctx.fillText("(this browser cannot show this format)", 10, 20);
  }
  return canvas;
}

/** Something drawImage takes, its size, and how to let it go: the decoded image, or else (for a
 * video model) the file's middle frame through a <video> element. */
async function pictureOf(file) {
  try {
    const bitmap = await createImageBitmap(file);
    return { source: bitmap, width: bitmap.width, height: bitmap.height, close: () => bitmap.close() };
  } catch (error) {
    if (!ui.info?.temporal) throw error;
  }
  const video = document.createElement("video");
  const url = URL.createObjectURL(file);
  const close = () => { video.removeAttribute("src"); video.load(); URL.revokeObjectURL(url); };
  try {
    video.muted = true;
    video.preload = "auto";
    await new Promise((ok, bad) => {
      video.onloadeddata = ok;
      video.onerror = () => bad(new Error("this browser cannot decode the video"));
      video.src = url;
    });
    const middle = Number.isFinite(video.duration) ? video.duration / 2 : 0; // a live recording has none
    await new Promise((ok) => {
      video.onseeked = ok;
      video.currentTime = middle;
    });
    ui.videoFrameAt = middle;
    return { source: video, width: video.videoWidth, height: video.videoHeight, close };
  } catch (error) {
    close();
    throw error;
  }
}

function cropOf(w, h) {
  const pre = ui.info?.preprocess ?? {};
  const size = ui.info?.image_size ?? Math.min(w, h);
  const [sh, sw] = Array.isArray(size) ? size : [size, size];
  if (pre.resize === "squash") return [0, 0, w, h];
  const short = pre.resize_size || Math.max(sh, sw);
  const [nw, nh] = w <= h ? [short, Math.floor((short * h) / w)] : [Math.floor((short * w) / h), short];
  const fx = w / nw, fy = h / nh;
  return [Math.floor((nw - sw) / 2) * fx, Math.floor((nh - sh) / 2) * fy, sw * fx, sh * fy];
}

function pointAt(box, event) {
  const rect = box.getBoundingClientRect();
  const col = Math.floor(((event.clientX - rect.left) / rect.width) * shown.gw);
  const row = Math.floor(((event.clientY - rect.top) / rect.height) * shown.rows);
  if (col < 0 || row < 0 || col >= shown.gw || row >= shown.rows) return;
  setQuery(Number(box.dataset.image), row * shown.gw + col);
}

const MOVES = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };

function keyAt(box, event) {
  const image = Number(box.dataset.image);
  if (event.key === "Escape") return clearQuery();
  const move = MOVES[event.key];
  if (!move) return;
  event.preventDefault();
  const at = shown.query?.image === image ? shown.query.patch : 0;
  const row = Math.min(shown.rows - 1, Math.max(0, Math.floor(at / shown.gw) + move[0]));
  const col = Math.min(shown.gw - 1, Math.max(0, (at % shown.gw) + move[1]));
  setQuery(image, row * shown.gw + col);
}

/** Colour every patch of every image by its cosine similarity to patch ``patch`` of ``image``. */
function setQuery(image, patch) {
  if (shown.query?.image === image && shown.query?.patch === patch) return;
  shown.query = { image, patch };
  const values = cosineTo(shown.unit, shown.m, shown.d, image * shown.tokens + patch);
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const scale = (v) => (hi > lo ? (v - lo) / (hi - lo) : 1);
  document.querySelectorAll("canvas.heat").forEach((canvas, i) => {
    paint(canvas, (t) => colormap(scale(values[i * shown.tokens + t])));
    canvas.classList.add("on");
  });
  placeMarkers(image, patch);
  const row = Math.floor(patch / shown.gw), col = patch % shown.gw;
  ui.heat = { image, patch, row, col, values: Array.from(values), lo, hi };
  $("heat-legend").textContent = `Similarity to patch (row ${row + 1}, column ${col + 1}) of image ${image + 1}: ` +
    `yellow ${hi.toFixed(3)}, dark blue ${lo.toFixed(3)} (cosine).`;
}

function placeMarkers(image, patch) {
  const row = Math.floor(patch / shown.gw), col = patch % shown.gw;
  document.querySelectorAll(".box").forEach((box) => {
    const marker = box.querySelector(".marker");
    marker.hidden = Number(box.dataset.image) !== image;
    Object.assign(marker.style, { left: `${(100 * col) / shown.gw}%`, top: `${(100 * row) / shown.rows}%`,
      width: `${100 / shown.gw}%`, height: `${100 / shown.rows}%` });
  });
}

function clearQuery() {
  shown.query = null;
  ui.heat = null;
  document.querySelectorAll("canvas.heat").forEach((c) => c.classList.remove("on"));
  document.querySelectorAll(".marker").forEach((m) => (m.hidden = true));
  $("heat-legend").textContent = "";
}

function drawSimilarity(sim, files) {
  const table = $("similarity");
  table.replaceChildren();
  const n = sim.length;
  const lo = Math.min(...sim.flat());
  const head = table.createTHead().insertRow();
  head.append(document.createElement("td"));
  for (let j = 0; j < n; j++) head.append(cellOf("th", String(j + 1), files[j].name, "col"));
  const tbody = table.createTBody();
  for (let i = 0; i < n; i++) {
    const row = tbody.insertRow();
    row.append(cellOf("th", String(i + 1), files[i].name, "row"));
    for (let j = 0; j < n; j++) {
      const td = cellOf("td", sim[i][j].toFixed(3), `${files[i].name} vs ${files[j].name}`);
      td.dataset.value = sim[i][j];
      const t = lo < 1 ? (sim[i][j] - lo) / (1 - lo) : 1;
      const [r, g, b] = colormap(t);
      td.style.background = `rgb(${r},${g},${b})`;
      td.style.color = 0.299 * r + 0.587 * g + 0.114 * b > 140 ? "#000" : "#fff";
      row.append(td);
    }
  }
}

function cellOf(tag, text, title, scope) {
  const cell = document.createElement(tag);
  cell.textContent = text;
  cell.title = title;
  if (scope) cell.scope = scope;
  return cell;
}

function setUpPicking() {
  const drop = $("drop"), input = $("files");
  input.addEventListener("change", () => input.files.length && embed([...input.files]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const files = [...e.dataTransfer.files];
    if (files.length) embed(files);
  });
}

setUpPicking();
loadInfo();
