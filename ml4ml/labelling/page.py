"""The labelling page: one model at a time, keyboard first, progress always shown.

``render(rater, transform, guideline)`` fills the page; every value is HTML-escaped (the
guideline is shown as text, never as HTML). The page's script and style are fixed, so the
``CSP`` header allows exactly them (by hash) and nothing else: no other script, no frame,
no form, requests to this server only. The script reads the rater's token from the
page's own URL (``?token=``) and sends it as ``Authorization: Bearer``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re

__all__ = ["render", "CSP"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 20px auto; max-width: 1100px; color: #222; }
header { display: flex; justify-content: space-between; align-items: baseline; }
#progress { font-size: 1.15em; font-weight: bold; }
#model { font-size: 1.3em; margin: 0.3em 0; }
#alias { font-family: ui-monospace, monospace; }
.keys kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 5px; background: #f6f6f6; }
#guide { background: #f6f8fa; border-left: 4px solid #8aa; padding: 6px 12px; margin: 8px 0; }
#guide h2 { font-size: 1em; margin: 0.2em 0; }
#guideline { white-space: pre-wrap; margin: 0.2em 0; }
figure { margin: 10px 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
#status { min-height: 1.4em; color: #555; } #status.error { color: #b42318; }
button { font-size: 1em; margin-right: 6px; padding: 4px 12px; }
#given { color: #555; } #given.skipped { color: #9a6700; font-weight: bold; }
#order, #counted { color: #555; font-size: 0.9em; }
#overlap { color: #555; }
#learning summary { cursor: pointer; font-weight: bold; }
#curve { width: 560px; height: 260px; font-size: 13px; }
#curve text { fill: #333; } #curve .axis { stroke: #555; } #curve .grid { stroke: #ddd; }
#curve .line { fill: none; stroke: #1f6feb; stroke-width: 2; }
#curve .band { fill: #1f6feb; opacity: 0.15; } #curve .dot { fill: #1f6feb; }
#curve-note { font-size: 0.85em; color: #555; max-width: 560px; }
"""

SCRIPT = """
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
      " \u00b7 shared with the other raters: " + p.overlap.rated + " of " + p.overlap.total +
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
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ml4ml: label models</title>
<meta name="referrer" content="no-referrer">
<style>__STYLE__</style></head>
<body>
<header><h1>Is this model invariant to <span id="transform">__TRANSFORM__</span>?</h1>
<span>rater <b id="rater">__RATER__</b> &middot; <span id="progress">...</span><span
 id="overlap"></span></span></header>
<section id="guide"><h2>What counts as invariant</h2><p id="guideline">__GUIDELINE__</p>
</section>
<p class="keys"><kbd>i</kbd> invariant &nbsp; <kbd>v</kbd> variant &nbsp; <kbd>s</kbd> skip
&nbsp; <kbd>&larr;</kbd> <kbd>&rarr;</kbd> previous / next model</p>
<div id="model">model <b id="alias">...</b> <span id="position"></span>
<span id="given"></span></div>
<div><button id="invariant">invariant (i)</button><button id="variant">variant (v)</button>
<button id="skip">skip (s)</button></div>
<p id="status"></p>
<figure><img id="matrices" alt="variance matrices">
<figcaption>variance matrices: how far apart the model's responses are for every pair of
parameters (one colour scale for every model); an invariant model stays dark away from the
diagonal</figcaption></figure>
<figure><img id="accuracy" alt="accuracy against the parameter">
<figcaption>accuracy against the parameter</figcaption></figure>
<p id="order">Order: __ORDER__.</p>
<p id="counted">Counted: __COUNTED__, the models this page can show.</p>
<details id="learning"><summary>How much your labels teach the assessor</summary>
<svg id="curve" viewBox="0 0 560 260" role="img"
 aria-label="estimated accuracy on the models not yet labelled against the number of your
 labels"></svg>
<p id="curve-note"></p></details>
<script>__SCRIPT__</script>
</body></html>
"""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = ("default-src 'none'; "
       f"script-src {_hash(SCRIPT)}; style-src {_hash(STYLE)}; "
       "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")


def render(rater: str, transform: str, guideline: str,
           order: str = "a random order of your own", counted: str = "every model") -> str:
    """The page for ``rater``, every value HTML-escaped; no token, no model id in it.

    order : how the models are ordered (the strategy's ``describe()``); counted : which
    models the progress counts (``labelling.counts.set_text``)."""
    values = {"__ORDER__": html.escape(order), "__COUNTED__": html.escape(counted),
              "__STYLE__": STYLE, "__SCRIPT__": SCRIPT, "__RATER__": html.escape(rater),
              "__TRANSFORM__": html.escape(transform),
              "__GUIDELINE__": html.escape(guideline)}
    return re.sub("|".join(values), lambda m: values[m.group(0)], PAGE)
