const TOKEN = new URLSearchParams(location.search).get("token") || "";
const AUTH = {"Authorization": "Bearer " + TOKEN};
const body = document.body;
let current = null;
let busy = false;

function byId(id) { return document.getElementById(id); }
function status(text, isError) {
  const s = byId("status");
  s.textContent = text || ""; s.className = isError ? "error" : "";
  body.dataset.status = text || "";
}
function given(answer) {
  if (answer.label === 1) return "you said: invariant";
  if (answer.label === 0) return "you said: variant";
  if (answer.skipped) return "you skipped it";
  return "";
}
function progress(p) {
  byId("progress").textContent = p.text;
  body.dataset.labelled = p.labelled;
  body.dataset.skipped = p.skipped;
  body.dataset.total = p.total;
  byId("overlap").textContent = p.overlap.total ?
      " · shared with the other raters: " + p.overlap.rated + " of " + p.overlap.total +
      " rated" : "";
}
function show(answer) {
  progress(answer.progress);
  if (answer.done) {
    current = null;
    byId("alias").textContent = "none left";
    byId("position").textContent = "";
    byId("given").textContent = "every model is labelled; arrows revisit them";
    byId("given").className = "";
    body.dataset.alias = "";
    return;
  }
  current = answer.alias;
  byId("alias").textContent = answer.alias;
  byId("position").textContent = "(" + answer.position + " of " + answer.progress.total +
      " in your order)";
  byId("given").textContent = given(answer);
  byId("given").className = answer.skipped ? "skipped" : "";
  byId("matrices").src = answer.images.matrices;
  byId("accuracy").src = answer.images.accuracy;
  body.dataset.given = given(answer);
  body.dataset.alias = answer.alias;
}
async function load(query) {
  try {
    const r = await fetch("/api/next" + (query ? "?" + query : ""), {headers: AUTH});
    const answer = await r.json();
    if (!r.ok) { status(answer.error, true); return; }
    show(answer);
  } catch (e) { status("the server did not answer: " + e, true); }
}
async function give(label) {  // 1 invariant, 0 variant, null skip
  if (!current || busy) return;
  busy = true;
  const alias = current;
  status((label === null ? "skipping " : "saving ") + alias + " ...");
  try {
    const r = await fetch("/api/labels", {method: "POST",
      headers: Object.assign({"Content-Type": "application/json"}, AUTH),
      body: JSON.stringify({alias: alias, label: label})});
    const answer = await r.json();
    if (!r.ok) { status(answer.error, true); return; }
    status(label === null ? "skipped " + alias :
           "saved " + alias + " " + (label === 1 ? "invariant" : "variant"));
    body.dataset.saved = parseInt(body.dataset.saved || "0") + 1;
    progress(answer.progress);
    await load("after=" + encodeURIComponent(alias));
    curve();
  } catch (e) {
    status("not saved (the server did not answer): " + e, true);
  } finally { busy = false; }
}
const SVG = "http://www.w3.org/2000/svg";
function svg(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function drawCurve(answer) {
  const box = byId("curve");
  while (box.firstChild) box.removeChild(box.firstChild);
  const pts = answer.points.filter(p => p.accuracy !== null);
  const W = 560, H = 260, L = 56, R = 16, T = 12, B = 44;
  const nMax = Math.max(10, answer.labelled, ...answer.points.map(p => p.n_labels));
  const x = n => L + (W - L - R) * n / nMax, y = a => T + (H - T - B) * (1 - a);
  for (const a of [0, 0.25, 0.5, 0.75, 1]) {
    box.appendChild(svg("line", {x1: L, x2: W - R, y1: y(a), y2: y(a), class: "grid"}));
    box.appendChild(svg("text", {x: L - 6, y: y(a) + 4, "text-anchor": "end"}, a.toFixed(2)));
  }
  for (let k = 0; k <= 4; k++) {
    const n = Math.round(nMax * k / 4);
    box.appendChild(svg("text", {x: x(n), y: H - B + 18, "text-anchor": "middle"}, n));
  }
  box.appendChild(svg("line", {x1: L, x2: L, y1: T, y2: H - B, class: "axis"}));
  box.appendChild(svg("line", {x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis"}));
  box.appendChild(svg("text", {x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle"},
                      "your labels (the first n, in the order you gave them)"));
  box.appendChild(svg("text", {x: 14, y: (T + H - B) / 2, "text-anchor": "middle",
                               transform: "rotate(-90 14 " + (T + H - B) / 2 + ")"},
                      "accuracy, models not labelled"));
  if (pts.length) {
    const upper = pts.map(p => x(p.n_labels) + "," + y(Math.min(1, p.accuracy + p.se)));
    const lower = pts.slice().reverse().map(p => x(p.n_labels) + "," +
                                            y(Math.max(0, p.accuracy - p.se)));
    box.appendChild(svg("polygon", {points: upper.concat(lower).join(" "), class: "band"}));
    box.appendChild(svg("polyline", {points: pts.map(p => x(p.n_labels) + "," +
                                                      y(p.accuracy)).join(" "), class: "line"}));
    for (const p of pts) box.appendChild(svg("circle", {cx: x(p.n_labels), cy: y(p.accuracy),
                                                        r: 3, class: "dot"}));
  }
  const last = pts[pts.length - 1];
  byId("curve-note").textContent = (last ?
      "at " + last.n_labels + " labels: " + last.accuracy.toFixed(2) + " +- " +
      last.se.toFixed(2) + ", from " + last.n_scored + " random pick(s). " :
      "no estimate yet (it needs 10 labels, 2 of each kind, 2 random picks). ") +
      answer.scored + " of your " + answer.labelled + " labels are random picks. Line: " +
      answer.what + " (band); assessor: " + answer.assessor + ".";
  body.dataset.curvePoints = pts.length;
  body.dataset.curveLabelled = answer.labelled;
  body.dataset.curveScored = answer.scored;
}
async function curve() {
  if (!byId("learning").open) return;
  try {
    const r = await fetch("/api/curve", {headers: AUTH});
    const answer = await r.json();
    if (!r.ok) { status(answer.error, true); return; }
    drawCurve(answer);
  } catch (e) { status("the server did not answer: " + e, true); }
}
function step(direction) {
  if (current) load("any=1&" + direction + "=" + encodeURIComponent(current));
}
document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "i") give(1);
  else if (e.key === "v") give(0);
  else if (e.key === "s") give(null);
  else if (e.key === "ArrowRight") step("after");
  else if (e.key === "ArrowLeft") step("before");
});
byId("invariant").addEventListener("click", () => give(1));
byId("variant").addEventListener("click", () => give(0));
byId("skip").addEventListener("click", () => give(null));
byId("learning").addEventListener("toggle", curve);
load("");
