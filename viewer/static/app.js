// The search page. The URL holds the search (?q=…&objects=1&class=…&min_confidence=…&tags=…&since=…&until=…
// &counts=…&all=1&like=DOC:N&page=…&size=…) so a search can be linked and reloaded; a query image cannot travel in
// a URL and is kept only while the page is open. Everything drawn comes from the viewer's /api/search; text is
// always set as text. Clicking a box searches for images holding objects like it (its stored embedding); clicking a
// class facet filters on images holding at least one object of that class (the "how many" field shows it).
"use strict";

const FIELDS = ["q", "class", "min_confidence", "tags", "since", "until", "counts", "size"];
const MAX_FRAME_WIDTH = 240;
const MAX_FRAME_HEIGHT = 300;

const $ = (id) => document.getElementById(id);
const form = $("search-form");
let queryImage = null; // data URL of the chosen query image
let likeObject = null; // "DOC_ID:N": the clicked box whose look-alikes are searched
let page = 1;
let lastTotal = 0;
let sequence = 0; // answers to older searches are dropped

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function splitList(value) {
  return value.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
}

function readUrl() {
  const params = new URLSearchParams(window.location.search);
  for (const name of FIELDS) {
    if (params.has(name)) $(name).value = params.get(name);
  }
  const yes = (name) => ["1", "true", "on", "yes"].includes((params.get(name) || "").toLowerCase());
  $("objects").checked = yes("objects");
  $("all_copies").checked = yes("all");
  setLike(params.get("like"));
  page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
  return likeObject !== null || (params.has("q") && params.get("q").trim() !== "");
}

function writeUrl() {
  const params = new URLSearchParams();
  for (const name of FIELDS) {
    const value = $(name).value.trim();
    if (value !== "" && !(name === "size" && value === "12")) params.set(name, value);
  }
  if ($("objects").checked) params.set("objects", "1");
  if ($("all_copies").checked) params.set("all", "1");
  if (likeObject) params.set("like", likeObject);
  if (page > 1) params.set("page", String(page));
  const url = window.location.pathname + (params.toString() ? "?" + params.toString() : "");
  if (url !== window.location.pathname + window.location.search) window.history.pushState(null, "", url);
}

function request() {
  const minConfidence = $("min_confidence").value.trim();
  return {
    q: $("q").value,
    image: queryImage,
    objects: $("objects").checked,
    classes: splitList($("class").value),
    min_confidence: minConfidence === "" ? null : Number(minConfidence),
    tags: splitList($("tags").value),
    since: $("since").value.trim() || null,
    until: $("until").value.trim() || null,
    counts: splitList($("counts").value),
    like_object: likeObject,
    all_copies: $("all_copies").checked,
    page: page,
    size: parseInt($("size").value, 10) || 12,
  };
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearResults() {
  $("results").replaceChildren();
  $("pager").hidden = true;
}

function colour(name) {
  let hash = 0;
  for (const ch of String(name)) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360}, 80%, 42%)`;
}

function frameSize(width, height) {
  const scale = Math.min(MAX_FRAME_WIDTH / width, MAX_FRAME_HEIGHT / height);
  return [Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale))];
}

function drawBox(frame, object, hit, displayHeight, index) {
  const b = object.bbox || {};
  const box = element("div", "box");
  box.dataset.class = object.class_name;
  box.dataset.confidence = Number(object.confidence).toFixed(3);
  // boxes are in the original image's pixels: percentages of width/height scale them onto the thumbnail
  box.style.left = `${(100 * b.x1) / hit.width}%`;
  box.style.top = `${(100 * b.y1) / hit.height}%`;
  box.style.width = `${(100 * (b.x2 - b.x1)) / hit.width}%`;
  box.style.height = `${(100 * (b.y2 - b.y1)) / hit.height}%`;
  box.style.setProperty("--colour", colour(object.class_name));
  if ((b.y1 / hit.height) * displayHeight < 14) box.classList.add("low"); // no room above: label inside
  if (index === hit.matched) box.classList.add("matched");
  box.title = `${object.class_name} ${Number(object.confidence).toFixed(3)}`;
  box.append(element("span", "label", `${object.class_name} ${Number(object.confidence).toFixed(2)}`));
  box.addEventListener("click", () => { // look-alikes of this very object, by its stored embedding
    setLike(`${hit.id}:${index}`, `${object.class_name} in ${hit.filename || hit.image_id || hit.id}`);
    page = 1;
    writeUrl();
    search();
  });
  frame.append(box);
}

function renderHit(hit, objectLevel) {
  const card = element("div", "result");
  card.dataset.id = hit.id;
  const sized = hit.width > 0 && hit.height > 0;
  const [w, h] = sized ? frameSize(hit.width, hit.height) : [MAX_FRAME_WIDTH, MAX_FRAME_WIDTH * 0.75];
  const frame = element("div", "frame");
  frame.style.width = `${w}px`;
  frame.style.height = `${h}px`;
  if (hit.thumbnail) {
    const img = element("img");
    img.alt = hit.filename || hit.image_id || hit.id;
    img.src = "data:image/jpeg;base64," + hit.thumbnail;
    frame.append(img);
  } else {
    frame.append(element("div", "no-picture", "no thumbnail stored"));
  }
  if (sized) hit.objects.forEach((object, i) => drawBox(frame, object, hit, h, i));
  card.append(frame);

  const meta = element("div", "meta");
  meta.append(element("span", "score", `score ${Number(hit.score).toFixed(4)}`), " · ",
              element("span", "name", hit.filename || hit.image_id || hit.id));
  if (objectLevel && hit.matched !== null && hit.objects[hit.matched]) {
    const m = hit.objects[hit.matched];
    meta.append(element("div", "match", `matched: ${m.class_name} ${Number(m.confidence).toFixed(2)}`));
  }
  const details = [`${hit.objects.length} object(s)`];
  if (hit.tags.length) details.push(`tags: ${hit.tags.join(", ")}`);
  if (hit.upload_date) details.push(`uploaded ${hit.upload_date}`);
  meta.append(element("div", "details", details.join(" · ")));
  card.append(meta);
  return card;
}

function setLike(ref, label) {
  likeObject = ref || null;
  $("like-chosen").hidden = likeObject === null;
  $("like-label").textContent = likeObject ? `objects like ${label || likeObject}` : "";
}

function countsList() {
  return splitList($("counts").value);
}

function toggleClass(name) { // a facet click: images holding at least one such object, or no longer
  const wanted = `${name}>=1`;
  const counts = countsList();
  const kept = counts.filter((c) => c.replace(/\s+/g, "") !== wanted);
  $("counts").value = (kept.length === counts.length ? [...counts, wanted] : kept).join(", ");
  page = 1;
  writeUrl();
  search();
}

function renderFacets(facets) {
  const active = new Set(countsList().map((c) => c.replace(/\s+/g, "")));
  const names = Object.keys(facets || {});
  $("facets").replaceChildren(...names.map((name) => {
    const button = element("button", "facet", `${name} (${facets[name]})`);
    button.type = "button";
    button.dataset.class = name;
    if (active.has(`${name}>=1`)) button.classList.add("active");
    button.style.setProperty("--colour", colour(name));
    button.addEventListener("click", () => toggleClass(name));
    return button;
  }));
  $("facets").hidden = names.length === 0;
}

function render(answer, objectLevel) {
  renderFacets(answer.facets);
  const results = $("results");
  results.classList.toggle("object-level", objectLevel);
  results.replaceChildren(...answer.hits.map((hit) => renderHit(hit, objectLevel)));
  lastTotal = answer.total;
  const first = (answer.page - 1) * answer.size + 1;
  const last = first + answer.hits.length - 1;
  const total = `${answer.total}${answer.relation === "gte" ? "+" : ""}`;
  $("status").textContent = answer.hits.length
    ? `results ${first}–${last} of ${total} (${answer.mode.replace(/-/g, " ")}, ${answer.took_ms} ms)`
    : "no results";
  $("page-info").textContent = `page ${answer.page}`;
  $("prev").disabled = answer.page <= 1;
  $("next").disabled = answer.page * answer.size >= answer.total;
  $("pager").hidden = answer.hits.length === 0 && answer.page === 1;
}

async function search() {
  const body = request();
  if (!body.image && !body.like_object && body.q.trim() === "") {
    showError("Type a text query or choose a query image.");
    return;
  }
  const mine = ++sequence;
  $("error").hidden = true;
  $("status").textContent = "searching …";
  document.body.dataset.state = "searching";
  let answer;
  try {
    const response = await fetch("/api/search", {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
    });
    answer = await response.json().catch(() => ({error: `the viewer answered ${response.status}`}));
    if (!response.ok) throw new Error(answer.error || `the viewer answered ${response.status}`);
  } catch (err) {
    if (mine !== sequence) return;
    clearResults();
    $("status").textContent = "";
    showError(`Search failed: ${err.message}`);
    document.body.dataset.state = "error";
    return;
  }
  if (mine !== sequence) return;
  render(answer, body.objects || body.like_object !== null);
  document.body.dataset.state = "done";
}

async function loadClasses() {
  try {
    const response = await fetch("/api/classes");
    if (!response.ok) return; // only suggestions: the filter works without them
    const answer = await response.json();
    $("class-names").replaceChildren(...answer.classes.map((name) => {
      const option = element("option");
      option.value = name;
      return option;
    }));
  } catch (err) {
    // suggestions are optional
  }
}

function chooseImage(file) {
  const reader = new FileReader();
  reader.onload = () => {
    queryImage = reader.result;
    $("image-preview").src = queryImage;
    $("image-chosen").hidden = false;
    page = 1;
    search();
  };
  reader.onerror = () => showError(`Could not read ${file.name}.`);
  reader.readAsDataURL(file);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  page = 1;
  if (event.submitter && event.submitter.id === "submit") setLike(null); // a new text or image search
  writeUrl();
  search();
});
$("objects").addEventListener("change", () => form.requestSubmit());
$("all_copies").addEventListener("change", () => form.requestSubmit());
$("like-clear").addEventListener("click", () => { setLike(null); writeUrl(); });
$("size").addEventListener("change", () => form.requestSubmit());
$("image").addEventListener("change", (event) => {
  if (event.target.files.length) chooseImage(event.target.files[0]);
});
$("image-clear").addEventListener("click", () => {
  queryImage = null;
  $("image").value = "";
  $("image-chosen").hidden = true;
});
$("prev").addEventListener("click", () => { page = Math.max(1, page - 1); writeUrl(); search(); });
$("next").addEventListener("click", () => {
  if (page * (parseInt($("size").value, 10) || 12) < lastTotal) { page += 1; writeUrl(); search(); }
});
window.addEventListener("popstate", () => { if (readUrl()) search(); });

loadClasses();
if (readUrl()) search();
