"""The labelling page's web app (Starlette): blind, keyboard-first, every label saved at once.

``create_app(path, transform, rater)`` serves one store:

    GET  /                          the page (``labelling.page``)
    GET  /api/next?rater=NAME       the rater's next model: mid, images, progress
         [&after=MID]                 the next unlabelled one after MID (wrapping)
         [&any=1&after=MID|before=MID]  the model after (before) MID, labelled or not
    POST /api/labels                {"mid": ..., "label": 0|1, "rater": ...}: saved, then 200
    GET  /api/labels?rater=NAME     that rater's labels, with their times
    GET  /images/<mid>/matrices.png the model's variance matrices (shared colour scale)
    GET  /images/<mid>/accuracy.png its accuracy against the parameter

Each rater sees the models in an order of their own, random and seeded (``seed`` and the
rater's name). Nothing on the page tells the recipe or another rater's label. A label is
written into the store (``labels/<transform>``, the rater's row: label and time) before the
answer goes back, holding the store's writer lock for that write only, so two pages or two
servers on one store lose nothing; every other group is opened read-only. Bad requests get
a 4xx JSON ``{"error": ...}`` and change nothing; image paths name models, never files.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading

import numpy as np

from ml4ml import dims, store
from ml4ml.errors import ML4MLError, StoreError

__all__ = ["create_app", "LabellingState", "RATER_NAME"]

RATER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
LOCK_WAIT_S = 30.0
IMAGES = ("matrices", "accuracy")


class LabellingState:
    """What the page shows, read once from the store (read-only), and the ratings."""

    def __init__(self, path, transform: str, *, suite=None, seed: int = 0,
                 split: str = "all"):
        from ml4ml.report.stage import _matrices, _pick_group

        self.path, self.transform, self.seed = str(path), transform, int(seed)
        store.store_attrs(self.path)
        self.suite, _ = _pick_group(self.path, transform, suite)
        mids, values, titles, params, units = _matrices(self.path, self.suite, transform,
                                                        split)
        if not mids:
            raise StoreError(f"no model has matrices for {self.suite}/{transform} yet",
                             file=path, hint=f"run 'ml4ml measure {path}' first")
        self.mids = list(mids)
        self.known = set(self.mids)
        self.values, self.titles, self.params, self.units = values, titles, params, units
        measures = store.open_group(self.path, store.measures_group(self.suite, transform))
        self.accuracy = np.asarray(measures["accuracy"].sel({dims.MID: self.mids}).values)
        self._strips = None
        self._curves = None
        self._images: dict = {}
        self._draw = threading.Lock()
        self._write = threading.Lock()

    # ------------------------------------------------------------------ order
    def order(self, rater: str) -> list[str]:
        """The rater's own order of the models: a permutation seeded by seed and name."""
        key = hashlib.sha256(f"{self.seed}:{rater}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(key[:8], "little"))
        return [self.mids[k] for k in rng.permutation(len(self.mids))]

    def ratings(self, rater: str) -> dict:
        """{mid: (label, time)} the rater gave (labels 0 and 1 only)."""
        from ml4ml.store.labels import read_labels

        ds = read_labels(self.path, self.transform)
        if ds is None or rater not in [str(r) for r in ds["rater"].values]:
            return {}
        row = ds.sel(rater=rater)
        out = {}
        for mid, label, when in zip(ds[dims.MID].values, row["rating"].values,
                                    row["rated_at"].values):
            if int(label) in (0, 1) and str(mid) in self.known:
                out[str(mid)] = (int(label), _iso(when))
        return out

    def progress(self, rater: str, ratings=None) -> dict:
        ratings = self.ratings(rater) if ratings is None else ratings
        done = sum(1 for m in self.mids if m in ratings)
        return {"labelled": done, "total": len(self.mids),
                "text": f"{done} of {len(self.mids)} labelled"}

    def next_model(self, rater: str, after=None, before=None, any_model=False) -> dict:
        order = self.order(rater)
        ratings = self.ratings(rater)
        for name, mid in (("after", after), ("before", before)):
            if mid is not None and mid not in self.known:
                raise KeyError(f"unknown model {mid!r} in '{name}'")
        if any_model:
            if before is not None:
                mid = order[(order.index(before) - 1) % len(order)]
            elif after is not None:
                mid = order[(order.index(after) + 1) % len(order)]
            else:
                mid = order[0]
        else:
            start = order.index(after) + 1 if after is not None else 0
            candidates = order[start:] + order[:start]
            mid = next((m for m in candidates if m not in ratings), None)
        answer = {"rater": rater, "progress": self.progress(rater, ratings)}
        if mid is None:
            return {**answer, "mid": None, "done": True}
        return {**answer, "mid": mid, "done": False, "position": order.index(mid) + 1,
                "label": ratings[mid][0] if mid in ratings else None,
                "images": {kind: f"/images/{mid}/{kind}.png" for kind in IMAGES}}

    # ----------------------------------------------------------------- writing
    def save(self, rater: str, mid: str, label: int) -> str:
        """Write the rating now (the store's lock held for this write only); its time."""
        from ml4ml.store.labels import write_rating

        with self._write, store.writing(self.path, f"ml4ml label-ui ({rater})",
                                        wait=LOCK_WAIT_S):
            when = write_rating(self.path, self.transform, rater, mid, label)
        return _iso(np.datetime64(int(when * 1e6), "us"))

    # ------------------------------------------------------------------ images
    def image(self, mid: str, kind: str) -> bytes:
        key = (mid, kind)
        with self._draw:
            if key not in self._images:
                self._images[key] = self._render(mid, kind)
            return self._images[key]

    def _render(self, mid: str, kind: str) -> bytes:
        from ml4ml.report.figures import MatrixStrips, shared_scale

        buffer = io.BytesIO()
        k = self.mids.index(mid)
        if kind == "matrices":
            if self._strips is None:
                self._strips = MatrixStrips(self.titles, self.params,
                                            shared_scale(self.values), units=self.units,
                                            size=2.2, dpi=90)
            self._strips.draw(buffer, self.values[k])
        else:
            if self._curves is None:
                self._curves = _Curves(self.params, self.units)
            self._curves.draw(buffer, self.accuracy[k])
        return buffer.getvalue()


class _Curves:
    """One model's accuracy against the parameter, drawn into a pre-rendered frame."""

    def __init__(self, params, units):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.2, 2.6), dpi=90)
        ax.set_xlim(params[0], params[-1])
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"parameter ({units})" if units else "parameter", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.canvas.draw()
        self.frame = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        self.height = self.frame.shape[0]
        self.transform = ax.transData
        self.params = np.asarray(params, dtype=np.float64)
        plt.close(fig)

    def draw(self, file, accuracy) -> None:
        from PIL import Image, ImageDraw

        points = self.transform.transform(np.column_stack([self.params,
                                                           np.nan_to_num(accuracy)]))
        image = Image.fromarray(self.frame.copy())
        pen = ImageDraw.Draw(image)
        xy = [(float(x), float(self.height - y)) for x, y in points]
        pen.line(xy, fill=(40, 40, 40), width=2)
        for x, y in xy:
            pen.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(40, 40, 40))
        image.save(file, format="PNG")


def _iso(value) -> str:
    if value is None:
        return ""
    try:
        return np.datetime_as_string(np.datetime64(value, "s"), unit="s") + "Z"
    except (TypeError, ValueError):
        return str(value)


def create_app(path, transform: str, rater: str, *, suite=None, seed: int = 0):
    """The Starlette app of the labelling page for ``path`` and ``transform``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from ml4ml.labelling.page import PAGE

    if not RATER_NAME.match(rater or ""):
        raise ML4MLError(f"rater name {rater!r} must be 1-64 letters, digits, '.', '_' or "
                         "'-'", field="--rater")
    state = LabellingState(path, transform, suite=suite, seed=seed)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def rater_of(request: Request):
        name = request.query_params.get("rater")
        if not name:
            return None, error(400, "missing 'rater': ask with ?rater=NAME")
        if not RATER_NAME.match(name):
            return None, error(400, "'rater' must be 1-64 letters, digits, '.', '_' or '-'")
        return name, None

    def index(request: Request):
        html = PAGE.replace("__RATER__", json.dumps(rater)).replace(
            "__TRANSFORM__", json.dumps(transform))
        return HTMLResponse(html)

    def api_next(request: Request):
        name, bad = rater_of(request)
        if bad:
            return bad
        params = request.query_params
        try:
            answer = state.next_model(name, after=params.get("after"),
                                      before=params.get("before"),
                                      any_model=params.get("any") in ("1", "true"))
        except KeyError as exc:
            return error(404, str(exc.args[0]))
        return JSONResponse(answer)

    def api_labels_get(request: Request):
        name, bad = rater_of(request)
        if bad:
            return bad
        ratings = state.ratings(name)
        return JSONResponse({"rater": name, "progress": state.progress(name, ratings),
                             "labels": [{"mid": m, "label": v, "time": t}
                                        for m, (v, t) in ratings.items()]})

    async def api_labels_post(request: Request):
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return error(400, "the body must be JSON: {\"mid\": ..., \"label\": 0|1, "
                              "\"rater\": ...}")
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object with mid, label and rater")
        name, mid, label = body.get("rater"), body.get("mid"), body.get("label")
        if not isinstance(name, str) or not name:
            return error(400, "missing 'rater'")
        if not RATER_NAME.match(name):
            return error(400, "'rater' must be 1-64 letters, digits, '.', '_' or '-'")
        if not isinstance(mid, str) or not mid:
            return error(400, "missing 'mid'")
        if mid not in state.known:
            return error(404, f"unknown model {mid!r}")
        if isinstance(label, bool) or label not in (0, 1):
            return error(400, f"'label' must be 0 (variant) or 1 (invariant), got {label!r}")
        from starlette.concurrency import run_in_threadpool

        try:
            when = await run_in_threadpool(state.save, name, mid, int(label))
        except StoreError as exc:
            return error(503, f"the label was not saved: {exc}")
        return JSONResponse({"ok": True, "rater": name, "mid": mid, "label": int(label),
                             "time": when, "progress": state.progress(name)})

    def image(request: Request):
        mid, kind = request.path_params["mid"], request.path_params["kind"]
        if mid not in state.known or kind not in IMAGES:
            return error(404, "no such image")
        return Response(state.image(mid, kind), media_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    def health(request: Request):
        return JSONResponse({"ok": True, "models": len(state.mids)})

    return Starlette(routes=[
        Route("/", index),
        Route("/api/next", api_next),
        Route("/api/labels", api_labels_get, methods=["GET"]),
        Route("/api/labels", api_labels_post, methods=["POST"]),
        Route("/images/{mid}/{kind}.png", image),
        Route("/health", health),
    ])

