"""The Jinja2 templates of the report and the labelling page: files in each package's
``templates/`` folder, every ``{{ value }}`` HTML-escaped (autoescape on).

Nothing user-derived is marked safe: the templates escape store paths, model ids, suite
names, guidelines and rater names themselves. ``render`` writes the quote characters'
references as ``html.escape`` does (``&#x27;``, ``&quot;``; markupsafe writes ``&#39;``,
``&#34;``): the same characters, so the pages keep the bytes they had before templates.
"""

from __future__ import annotations

import functools

import jinja2

__all__ = ["environment", "render"]


@functools.cache
def environment(package: str) -> jinja2.Environment:
    """The templates of ``package`` (``ml4ml.report``, ``ml4ml.labelling``), autoescaped;
    blocks on lines of their own leave no line behind; a file's last newline is kept (the
    labelling page's CSP hashes its script and style as included)."""
    return jinja2.Environment(loader=jinja2.PackageLoader(package, "templates"),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def render(package: str, name: str, **values) -> str:
    """Template ``name`` of ``package`` filled with ``values``, as text."""
    text = environment(package).get_template(name).render(**values)
    # only escaping writes these two references: a '&' the text itself had is now '&amp;'
    return text.replace("&#39;", "&#x27;").replace("&#34;", "&quot;")
