"""The labelling page's web app (Starlette): blind, keyboard-first, every label saved at once.

``create_app(path, transform, raters)`` serves one store to the invited ``raters``; each
has a private token (``labelling.access``) and sends it with every request, as
``?token=TOKEN`` or ``Authorization: Bearer TOKEN``: the token says who is rating, never a
name in the request. Models are named by the rater's own opaque alias, never by model id.

    GET  /?token=TOKEN               the page (``labelling.page``)
    GET  /api/next                   the rater's next model: alias, images, progress
         [?after=ALIAS]                the next unrated one after ALIAS (wrapping; the
                                       skipped ones again once none is unrated)
         [?any=1&after=ALIAS|before=ALIAS]  the model after (before) ALIAS, rated or not
    POST /api/labels                 {"alias": ..., "label": 0|1}: saved, then 200;
                                     {"alias": ..., "label": null} (or "skip": true): a skip
    GET  /api/labels                 the rater's labels and skips, with their times
    GET  /api/curve                  the assessor's accuracy on the models not yet labelled,
                                     estimated from the rater's random picks, against the
                                     number of their labels (their learning curve)
    GET  /images/<alias>/matrices.png  the model's variance matrices (shared colour scale)
    GET  /images/<alias>/accuracy.png  its accuracy against the parameter

A missing token gets 401, a wrong one 403. A write must be ``Content-Type:
application/json`` from the page's own origin, and every request must name this server in
``Host`` (``labelling.guard``); else 403. Nothing on the page or in an answer tells a
model's id, its recipe, whether it is held out, or another rater's labels. Each rater sees
the models in an order of their own (``labelling.order``: seeded, or active; the
``overlap`` models first, the same for every rater). The page shows and counts the models
measured for the transform (``labelling.counts``), as ``ml4ml label --show`` does. A label
is written into the store (``labels/<transform>``, the rater's row: label, or -1 for a
skip, its time, and how the model was picked: ``LabellingState.pick_kind``) before the
answer goes back, holding the store's writer lock for that write only, so two pages or
two servers on one store lose nothing; every other group is opened read-only. Bad requests
get a 4xx JSON ``{"error": ...}`` and change nothing; image paths name aliases, never files.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np

from ml4ml import dims, store
from ml4ml.errors import InputError, StoreError

__all__ = ["create_app", "LabellingState", "default_guideline", "spec_guideline"]

LOCK_WAIT_S = 30.0
IMAGES = ("matrices", "accuracy")
SKIP = -1


class LabellingState:
    """What the page shows, read once from the store (read-only), and the ratings.

    Names models by their ids; the app translates them to each rater's aliases.
    """

    def __init__(self, path, transform: str, *, suite=None, seed: int = 0,
                 split: str = "all", order: str = "seeded", overlap: int = 0):
        from ml4ml.labelling.counts import page_models
        from ml4ml.labelling.order import ORDERS
        from ml4ml.report.stage import _matrices

        self.path, self.transform, self.seed = str(path), transform, int(seed)
        store.store_attrs(self.path)
        self.suite, counted = page_models(self.path, transform, suite)
        mids, values, titles, params, units = _matrices(self.path, self.suite, transform,
                                                        split)
        if not mids:
            raise StoreError(f"no model has matrices for {self.suite}/{transform} yet",
                             file=path, hint=f"run 'ml4ml measure {path}' first")
        if list(mids) != counted:  # the page counts what 'label --show' counts
            raise StoreError(f"the models with matrices ({len(mids)}) are not the models "
                             f"measured ({len(counted)}) for {self.suite}/{transform}",
                             file=path, hint=f"run 'ml4ml measure {path}'")
        self.mids = list(mids)
        self.known = set(self.mids)
        self.values, self.titles, self.params, self.units = values, titles, params, units
        measures = store.open_group(self.path, store.measures_group(self.suite, transform))
        self.accuracy = np.asarray(measures["accuracy"].sel({dims.MID: self.mids}).values)
        if order not in ORDERS:
            raise InputError(f"unknown order {order!r}; known: {', '.join(ORDERS)}",
                             field="--order")
        self.strategy = ORDERS[order](self, seed=self.seed, overlap=overlap)
        self._strips = None
        self._curves = None
        self._images: dict = {}
        self._learning: dict = {}
        self._offered: dict = {}  # rater -> (mid, kind, ratings) last offered by /api/next
        self._draw = threading.Lock()
        self._write = threading.Lock()

    def describe_set(self) -> str:
        """The models the page shows and counts, in words (``labelling.counts``)."""
        from ml4ml.labelling.counts import set_text

        return set_text(self.transform, self.suite, len(self.mids))

    # ------------------------------------------------------------------ order
    def sequence(self, rater: str) -> list[str]:
        """The rater's own order of every model (the strategy's)."""
        return self.strategy.sequence(rater)

    def ratings(self, rater: str) -> dict:
        """{mid: (label, time)} the rater gave: 1, 0, or -1 for a skip (a time, no label)."""
        from ml4ml.store.labels import read_labels

        ds = read_labels(self.path, self.transform)
        if ds is None or rater not in [str(r) for r in ds["rater"].values]:
            return {}
        row = ds.sel(rater=rater)
        out = {}
        for mid, label, when in zip(ds[dims.MID].values, row["rating"].values,
                                    row["rated_at"].values):
            label = int(label)
            if str(mid) in self.known and (label in (0, 1) or not np.isnat(when)):
                out[str(mid)] = (label, _iso(when))
        return out

    def progress(self, rater: str, ratings=None) -> dict:
        """The rater's counts over the page's models (``labelling.counts``): labelled,
        skipped, total, the overlap's (``overlap``: its size and how many are rated) and
        the line the page shows."""
        from ml4ml.labelling.counts import progress_text

        ratings = self.ratings(rater) if ratings is None else ratings
        done = sum(1 for m in self.mids if ratings.get(m, (SKIP,))[0] in (0, 1))
        skipped = sum(1 for m in self.mids if ratings.get(m, (None,))[0] == SKIP)
        shared = self.strategy.overlap
        return {"labelled": done, "skipped": skipped, "total": len(self.mids),
                "overlap": {"total": len(shared),
                            "rated": sum(1 for m in shared if m in ratings)},
                "text": progress_text(done, skipped, len(self.mids))}

    def next_model(self, rater: str, after=None, before=None, any_model=False) -> dict:
        """{"mid", "done", "position", "label", "skipped", "progress"}: the model to show."""
        order = self.sequence(rater)
        ratings = self.ratings(rater)
        for name, mid in (("after", after), ("before", before)):
            if mid is not None and mid not in self.known:
                raise KeyError(name)
        if any_model:
            if before is not None:
                mid = order[(order.index(before) - 1) % len(order)]
            elif after is not None:
                mid = order[(order.index(after) + 1) % len(order)]
            else:
                mid = order[0]
        else:
            mid, kind, _ = self.strategy.pick(rater, ratings, after=after)
            with self._draw:
                self._offered[rater] = (mid, kind, _snapshot(ratings))
        answer = {"progress": self.progress(rater, ratings)}
        if mid is None:
            return {**answer, "mid": None, "done": True}
        label = ratings.get(mid, (None,))[0]
        return {**answer, "mid": mid, "done": False, "position": order.index(mid) + 1,
                "label": label if label in (0, 1) else None, "skipped": label == SKIP}

    def pick_kind(self, rater: str, mid: str, ratings: dict) -> str:
        """How ``mid`` came to be rated (a name of ``store.labels.PICKS``), given the
        rater's ratings before: the kind of the model /api/next last offered when it is
        that one and nothing was rated since; else, after a restart, the kind of what the
        order offers now when it is that one; else ``browsed`` (reached with the arrows)."""
        with self._draw:
            offered = self._offered.get(rater)
        if offered is not None and offered[0] == mid and offered[2] == _snapshot(ratings):
            return offered[1]
        now, kind, _ = self.strategy.pick(rater, ratings)
        return kind if now == mid else "browsed"

    def learning_curve(self, rater: str) -> dict:
        """The assessor's accuracy on the models not yet labelled, estimated from the
        rater's random picks, against the number of their labels
        (``labelling.active.rater_learning_curve``), cached per set of ratings."""
        from ml4ml.labelling.active import (ASSESSOR, ESTIMATOR, PENALTY_C,
                                            rater_learning_curve)

        ratings = self.ratings(rater)
        labels = tuple(sorted((m, v, t) for m, (v, t) in ratings.items() if v in (0, 1)))
        key = (rater, tuple(sorted((m, v, t) for m, (v, t) in ratings.items())))  # skips too
        with self._draw:
            if key in self._learning:
                return self._learning[key]
        points, picks, unrecorded, scored = [], {}, 0, 0
        if labels:
            frame = rater_learning_curve(self.path, self.transform, rater, suite=self.suite,
                                         seed=self.seed)
            points = [{"n_labels": int(r.n_labels), "n_scored": int(r.n_scored),
                       "n_folds": int(r.n_folds),
                       "accuracy": None if np.isnan(r.accuracy) else round(r.accuracy, 4),
                       "se": None if np.isnan(r.se) else round(r.se, 4)}
                      for r in frame.itertuples()]
            picks, unrecorded = frame.attrs["picks"], frame.attrs["unrecorded"]
            scored = frame.attrs["n_scored"]
        answer = {"labelled": len(labels), "scored": scored, "picks": picks,
                  "points": points,
                  "assessor": f"{ASSESSOR} regression (C={PENALTY_C:g})",
                  "what": ESTIMATOR + "; +- its standard error; from 10 labels, every 5"
                          + (f"; {unrecorded} label(s) given before the store recorded "
                             "how models were picked count as random" if unrecorded else "")}
        with self._draw:
            self._learning = {k: v for k, v in self._learning.items() if k[0] != rater}
            self._learning[key] = answer
        return answer

    # ----------------------------------------------------------------- writing
    def save(self, rater: str, mid: str, label: int) -> str:
        """Write the rating (1, 0, or -1 for a skip) now, with how the model was picked
        (``pick_kind``; kept from the rater's first rating of it on), the store's lock
        held for this write only; its time."""
        from ml4ml.store.labels import write_rating

        with self._write, store.writing(self.path, f"ml4ml label-ui ({rater})",
                                        wait=LOCK_WAIT_S):
            ratings = self.ratings(rater)
            pick = None if mid in ratings else self.pick_kind(rater, mid, ratings)
            when = write_rating(self.path, self.transform, rater, mid, label, pick=pick)
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


def default_guideline(transform: str, params, units: str = "") -> str:
    """What 'invariant' means for ``transform`` over the tested range, in plain words."""
    lo, hi = (float(np.min(params)), float(np.max(params))) if len(params) else (0.0, 0.0)
    unit = f" {units}" if units else ""
    return (f"Invariant: over the whole tested range of {transform} ({lo:g} to {hi:g}{unit}) "
            f"the model's accuracy stays up, close to its accuracy on the untransformed "
            f"images, and its variance matrices stay dark: its responses to an image barely "
            f"change with the {transform}. Variant: the accuracy falls, or the matrices "
            f"light up away from the diagonal, over part of the range or all of it. Judge "
            f"what you see, not how good the model is; skip (s) when you cannot tell.")


def spec_guideline(path) -> str | None:
    """The guideline of the spec the store records (``[labels] guideline``), or None when
    the store records no spec, the spec is gone, or it has no guideline."""
    from ml4ml.config import labels_spec
    from ml4ml.store.groups import pipeline_file

    spec = pipeline_file(store.store_attrs(path), path)
    if not spec or "://" in spec or not Path(spec).is_file():
        return None
    return labels_spec(spec).guideline or None


class _Curves:
    """One model's accuracy against the parameter, drawn into a pre-rendered frame."""

    def __init__(self, params, units):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.0, 3.0), dpi=90)
        ax.set_xlim(params[0], params[-1])
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"parameter ({units})" if units else "parameter", fontsize=10)
        ax.set_ylabel("accuracy", fontsize=10)
        ax.tick_params(labelsize=9)
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


def _snapshot(ratings: dict) -> frozenset:
    """The rater's ratings as a value to compare: {(mid, label)}."""
    return frozenset((m, v) for m, (v, _) in ratings.items())


def _iso(value) -> str:
    if value is None:
        return ""
    try:
        return np.datetime_as_string(np.datetime64(value, "s"), unit="s") + "Z"
    except (TypeError, ValueError):
        return str(value)



def create_app(path, transform: str, raters, *, suite=None, seed: int = 0,
               order: str = "seeded", overlap: int = 0, guideline: str | None = None,
               host: str = "127.0.0.1", access_file=None):
    """The Starlette app of the labelling page for ``path`` and ``transform``.

    raters : the invited raters' names (a name or a list); each gets a token, kept in the
        access file (``labelling.access``; ``access_file`` or beside the store).
    order : "seeded" or "active" (``labelling.order``); overlap : the number of models
        every rater is asked first, each in their own order (``labelling.order``).
    guideline : the text shown above the models (default: the spec's ``[labels]
        guideline``, else ``default_guideline``).
    host : the address the server is bound to: which ``Host`` names it answers to.

    The app's ``state.access`` holds the tokens (``access.tokens[rater]``).
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from ml4ml.labelling.access import Access, check_raters
    from ml4ml.labelling.guard import Guard, Hosts, write_refusal
    from ml4ml.labelling.page import CSP, render, render_refusal

    raters = check_raters([raters] if isinstance(raters, str) else list(raters))
    state = LabellingState(path, transform, suite=suite, seed=seed, order=order,
                           overlap=overlap)
    if guideline is None:
        guideline = spec_guideline(path) or default_guideline(transform, state.params,
                                                               state.units)
    access = Access.open(path, raters, file=access_file)

    def error(status: int, message: str, **headers) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers or None)

    def aliases(rater: str) -> dict:
        return access.aliases(rater, state.mids)

    def mid_of(rater: str, alias) -> str | None:
        return {a: m for m, a in aliases(rater).items()}.get(alias)

    def rater_of(request: Request):
        """(rater, None) for a request with an invited rater's token; else (None, answer)."""
        import hmac

        token = request.query_params.get("token")
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, value = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                return None, error(401, "the Authorization header must be 'Bearer TOKEN'",
                                   **{"WWW-Authenticate": "Bearer"})
            value = value.strip()
            if token is not None and not hmac.compare_digest(token.encode(), value.encode()):
                return None, error(403, "two different tokens (query and header)")
            token = value
        if not token:
            return None, error(401, "missing token: open your private link "
                                    "(http://HOST:PORT/?token=...) from 'ml4ml label-ui', or "
                                    "send Authorization: Bearer TOKEN",
                               **{"WWW-Authenticate": "Bearer"})
        rater = access.rater_of(token)
        if rater is None:
            return None, error(403, "this token is not an invited rater's: ask for your "
                                    "private link")
        if "rater" in request.query_params:
            return None, error(400, "'rater' is not taken: your token says who you are")
        return rater, None

    def images(rater: str, alias: str) -> dict:
        token = access.tokens[rater]
        return {kind: f"/images/{alias}/{kind}.png?token={token}" for kind in IMAGES}

    def public(rater: str, answer: dict) -> dict:
        """The state's answer in the rater's words: aliases for mids."""
        out = {"rater": rater, "progress": answer["progress"]}
        if answer["done"]:
            return {**out, "alias": None, "done": True}
        alias = aliases(rater)[answer["mid"]]
        return {**out, "alias": alias, "done": False, "position": answer["position"],
                "label": answer["label"], "skipped": answer["skipped"],
                "images": images(rater, alias)}

    def index(request: Request):
        rater, bad = rater_of(request)
        if bad:
            return HTMLResponse(render_refusal(json.loads(bad.body)["error"]),
                                status_code=bad.status_code,
                                headers={k: v for k, v in bad.headers.items()
                                         if k == "www-authenticate"})
        return HTMLResponse(render(rater, transform, guideline, state.strategy.describe(),
                                   state.describe_set()))

    def api_next(request: Request):
        rater, bad = rater_of(request)
        if bad:
            return bad
        params = request.query_params
        where = {}
        for name in ("after", "before"):
            alias = params.get(name)
            if alias is not None:
                where[name] = mid_of(rater, alias)
                if where[name] is None:
                    return error(404, f"unknown model {alias!r} in '{name}'")
        answer = state.next_model(rater, any_model=params.get("any") in ("1", "true"),
                                  **where)
        return JSONResponse(public(rater, answer))

    def listing(rater: str) -> list:
        ratings = state.ratings(rater)
        names = aliases(rater)
        return [{"alias": names[m], "label": ratings[m][0] if ratings[m][0] in (0, 1)
                 else None, "skipped": ratings[m][0] == SKIP, "time": ratings[m][1]}
                for m in state.sequence(rater) if m in ratings]  # in the rater's order

    def api_labels_get(request: Request):
        rater, bad = rater_of(request)
        if bad:
            return bad
        return JSONResponse({"rater": rater, "progress": state.progress(rater),
                             "labels": listing(rater)})

    async def api_labels_post(request: Request):
        refusal = write_refusal(request)
        if refusal:
            return error(403, refusal)
        rater, bad = rater_of(request)
        if bad:
            return bad
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return error(400, "the body must be JSON: {\"alias\": ..., \"label\": 0|1|null}")
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object with alias and label")
        if "rater" in body:
            return error(400, "'rater' is not taken: your token says who you are")
        if "mid" in body:
            return error(400, "name the model by its 'alias', as /api/next gives it")
        alias, skip = body.get("alias"), body.get("skip", False)
        if not isinstance(alias, str) or not alias:
            return error(400, "missing 'alias'")
        mid = mid_of(rater, alias)
        if mid is None:
            return error(404, f"unknown model {alias!r}")
        if not isinstance(skip, bool):
            return error(400, f"'skip' must be true or false, got {skip!r}")
        label = body.get("label")
        if skip and label is not None:
            return error(400, "'skip': true takes no label (or 'label': null)")
        if not skip and "label" not in body:
            return error(400, "missing 'label': 0 (variant), 1 (invariant) or null (skip)")
        if label is not None and (isinstance(label, bool) or label not in (0, 1)):
            return error(400, f"'label' must be 0 (variant), 1 (invariant) or null (skip), "
                              f"got {label!r}")
        value = SKIP if label is None else int(label)
        try:
            when = await run_in_threadpool(state.save, rater, mid, value)
        except StoreError as exc:
            return error(503, f"the label was not saved: {exc.message}")
        return JSONResponse({"ok": True, "alias": alias,
                             "label": None if value == SKIP else value,
                             "skipped": value == SKIP, "time": when,
                             "progress": state.progress(rater)})

    def image(request: Request):
        rater, bad = rater_of(request)
        if bad:
            return bad
        alias, kind = request.path_params["alias"], request.path_params["kind"]
        mid = mid_of(rater, alias)
        if mid is None or kind not in IMAGES:
            return error(404, "no such image")
        return Response(state.image(mid, kind), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    async def api_curve(request: Request):
        rater, bad = rater_of(request)
        if bad:
            return bad
        return JSONResponse({"rater": rater, "order": state.strategy.name,
                             **await run_in_threadpool(state.learning_curve, rater)})

    def health(request: Request):
        return JSONResponse({"ok": True})

    app = Starlette(routes=[
        Route("/", index),
        Route("/api/next", api_next),
        Route("/api/labels", api_labels_get, methods=["GET"]),
        Route("/api/labels", api_labels_post, methods=["POST"]),
        Route("/api/curve", api_curve),
        Route("/images/{alias}/{kind}.png", image),
        Route("/health", health),
    ], middleware=[Middleware(Guard, hosts=Hosts(host), csp=CSP)])
    app.state.access = access
    app.state.labelling = state
    return app
