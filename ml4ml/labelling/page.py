"""The labelling page: one model at a time, keyboard first, progress always shown."""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ml4ml: label models</title>
<style>
body { font-family: system-ui, sans-serif; margin: 20px auto; max-width: 1100px; color: #222; }
header { display: flex; justify-content: space-between; align-items: baseline; }
#progress { font-size: 1.15em; font-weight: bold; }
#model { font-size: 1.3em; margin: 0.3em 0; }
.keys kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 5px; background: #f6f6f6; }
figure { margin: 10px 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
#status { min-height: 1.4em; color: #555; } #status.error { color: #b42318; }
button { font-size: 1em; margin-right: 6px; padding: 4px 12px; }
#given { color: #555; }
</style></head>
<body>
<header><h1>Is this model invariant to <span id="transform"></span>?</h1>
<span>rater <b id="rater"></b> &middot; <span id="progress">...</span></span></header>
<p class="keys"><kbd>i</kbd> invariant &nbsp; <kbd>v</kbd> variant &nbsp; <kbd>s</kbd> skip
&nbsp; <kbd>&larr;</kbd> <kbd>&rarr;</kbd> previous / next model</p>
<div id="model">model <b id="mid">...</b> <span id="position"></span>
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
<script>
const RATER = new URLSearchParams(location.search).get("rater") || __RATER__;
const TRANSFORM = __TRANSFORM__;
let current = null;
let busy = false;
document.getElementById("rater").textContent = RATER;
document.getElementById("transform").textContent = TRANSFORM;

function status(text, isError) {
  const s = document.getElementById("status");
  s.textContent = text || ""; s.className = isError ? "error" : "";
}
function show(answer) {
  document.getElementById("progress").textContent = answer.progress.text;
  document.body.dataset.labelled = answer.progress.labelled;
  if (answer.done) {
    current = null;
    document.getElementById("mid").textContent = "none left";
    document.getElementById("position").textContent = "";
    document.getElementById("given").textContent = "every model is labelled; arrows revisit them";
    return;
  }
  current = answer.mid;
  document.getElementById("mid").textContent = answer.mid;
  document.getElementById("position").textContent = "(" + answer.position + " of " +
      answer.progress.total + " in your order)";
  document.getElementById("given").textContent = answer.label === null ? "" :
      ("you said: " + (answer.label === 1 ? "invariant" : "variant"));
  document.getElementById("matrices").src = answer.images.matrices;
  document.getElementById("accuracy").src = answer.images.accuracy;
  document.body.dataset.mid = answer.mid;
}
async function load(query) {
  const r = await fetch("/api/next?rater=" + encodeURIComponent(RATER) + (query || ""));
  const answer = await r.json();
  if (!r.ok) { status(answer.error, true); return; }
  show(answer);
}
async function give(label) {
  if (!current || busy) return;
  busy = true;
  const mid = current;
  status("saving " + mid + " ...");
  try {
    const r = await fetch("/api/labels", {method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({mid: mid, label: label, rater: RATER})});
    const answer = await r.json();
    if (!r.ok) { status(answer.error, true); return; }
    status("saved: " + mid + " " + (label === 1 ? "invariant" : "variant"));
    document.body.dataset.saved = (parseInt(document.body.dataset.saved || "0") + 1);
    await load("&after=" + encodeURIComponent(mid));
  } finally { busy = false; }
}
document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "i") give(1);
  else if (e.key === "v") give(0);
  else if (e.key === "s" && current) load("&after=" + encodeURIComponent(current));
  else if (e.key === "ArrowRight" && current) load("&any=1&after=" + encodeURIComponent(current));
  else if (e.key === "ArrowLeft" && current) load("&any=1&before=" + encodeURIComponent(current));
});
document.getElementById("invariant").onclick = () => give(1);
document.getElementById("variant").onclick = () => give(0);
document.getElementById("skip").onclick = () => current && load("&after=" + encodeURIComponent(current));
load("");
</script>
</body></html>
"""
