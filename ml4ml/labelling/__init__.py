"""The labelling page: experts label models in a browser, straight into the store.

Modules: ``app`` (the Starlette app and its HTTP API), ``page`` (the page itself),
``access`` (the raters' tokens and blind aliases), ``guard`` (Host, Origin and the
security headers), ``order`` (in what order a rater is asked, the shared overlap first),
``counts`` (which models the page, ``label --show`` and ``label --agreement`` count),
``active`` (active labelling and the learning curve).
Run it with ``ml4ml label-ui STORE --transform T --rater NAME [--rater NAME ...]``.
"""

from ml4ml._lazy import lazy_exports

__all__ = ["create_app", "LabellingState"]

__getattr__ = lazy_exports(__name__, {
    "create_app": "ml4ml.labelling.app",
    "LabellingState": "ml4ml.labelling.app",
})
