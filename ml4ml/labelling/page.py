"""The labelling page: one model at a time, keyboard first, progress always shown.

``render(rater, transform, guideline)`` fills ``templates/label.html.j2``; the template
escapes every value (the guideline is shown as text, never as HTML). The page's script
(``templates/label.js``) and style (``templates/label.css``) are fixed files, so the
``CSP`` header allows exactly them (by hash) and nothing else: no other script, no frame,
no form, requests to this server only. The script reads the rater's token from the
page's own URL (``?token=``) and sends it as ``Authorization: Bearer``.
"""

from __future__ import annotations

import base64
import hashlib

from ml4ml.report.templating import environment, render as render_template

__all__ = ["render", "render_refusal", "CSP", "SCRIPT", "STYLE"]

PACKAGE = "ml4ml.labelling"


def _included(name: str) -> str:
    """A file of the page as the template includes it."""
    return environment(PACKAGE).get_template(name).render()


SCRIPT = _included("label.js")
STYLE = _included("label.css")


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
    return render_template(PACKAGE, "label.html.j2", rater=rater, transform=transform,
                           guideline=guideline, order=order, counted=counted)


def render_refusal(message: str) -> str:
    """The page instead of the labelling page when a request is refused (no or a wrong
    token): ``message``, escaped."""
    return render_template(PACKAGE, "refused.html.j2", message=message)
