"""Figures of a model database, as PNG files: pure functions of arrays (matplotlib, Agg).

- ``MatrixStrips`` / ``matrix_strip``: one model's variance matrices side by side
  (confidence and the layer statistics of the paper80 features), each level on the colour
  scale given for it, so strips of different models compare at a glance; each colour bar
  names its quantity (``quantity``), in two layouts (the gallery's thumbnail, full size);
- ``accuracy_curves``: accuracy against the transformation parameter for every model,
  coloured by label;
- ``importance_bars``: the top features of an assessor, bars and whiskers defined;
- ``rank_bars``: the best single measures' hold-out AUC with its interval, by family;
- ``shared_scale``: the colour-scale maximum of each level across models.

Every text of every figure is at least 8 points at 100 dpi (11 px when shown at its own
size); each PNG says so in its text chunks (``font_metadata``), which the report's test
reads.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["MatrixStrips", "matrix_strip", "accuracy_curves", "importance_bars", "shared_scale",
           "quantity", "font_metadata", "min_font_pt", "LABEL_COLOURS", "CMAP", "LAYOUTS",
           "THUMBNAIL_WIDTH", "STRIP_NOTE", "rank_bars", "FAMILY_COLOURS"]

CMAP = "magma"
# the class colours of every figure and of the page: Okabe and Ito's colour-blind-safe blue
# (invariant) and vermillion (variant), grey for unknown
LABEL_COLOURS = {1: "#0072B2", 0: "#D55E00", -1: "#999999"}
LABEL_NAMES = {1: "invariant", 0: "variant", -1: "unknown"}


def shared_scale(matrices: np.ndarray, vmax=None, percentile: float = 99.0) -> np.ndarray:
    """Colour-scale maxima (level,) of ``matrices`` (mid, level, P, P).

    vmax : a number for every level, or None for each level's ``percentile`` over every
        model's finite entries (so one outlier model does not wash the others out).
    """
    n_levels = matrices.shape[1]
    if vmax is not None:
        return np.full(n_levels, float(vmax))
    values = np.moveaxis(matrices, 1, 0).reshape(n_levels, -1)
    out = np.empty(n_levels)
    for k in range(n_levels):  # a handful of levels
        finite = values[k][np.isfinite(values[k])]
        out[k] = np.percentile(finite, percentile) if finite.size else 1.0
    return np.where(out > 0, out, 1.0)


def quantity(level: str, *, short: bool = False) -> str:
    """What the colour bar of ``level``'s matrix shows, with its unit: the root-mean-square
    difference of the response between the two parameters over the samples (the L2
    variance matrix, ``ml4ml.measure.matrices``); confidence in probability, a layer
    statistic in the units of the layer's output."""
    unit = "probability" if level == "confidence" else "layer output"
    return f"RMS Δ\n({unit})" if short else f"RMS Δ {level}\n({unit})"


# the footer of a strip: its axes and its colour, defined
STRIP_NOTE = ("RMS Δ: root-mean-square over the samples of the change in the response "
              "between the parameters on the two axes, D[i, j] = ‖R(p_i) − R(p_j)‖₂ / √n")

STRIP_NOTE_SHORT = ("RMS Δ: root-mean-square over the samples of the change in the "
                    "response between the two parameters")

# a strip's look, in pixels at its dpi: the gallery's thumbnail (shown 1:1 in a card of
# THUMBNAIL_WIDTH CSS px) and the full-size picture a click opens
LAYOUTS = {
    "thumbnail": {"dpi": 100, "width": 566, "panel_max": 150, "gap": 20, "left": 30,
                  "right": 22, "font": 8.0, "title": 8.0, "bar": 7, "short": True},
    "full": {"dpi": 100, "panel": 230, "gap": 40, "left": 46, "right": 16, "font": 10.0,
             "title": 11.0, "bar": 10, "short": False},
}
THUMBNAIL_WIDTH = LAYOUTS["thumbnail"]["width"]


def min_font_pt(fig) -> float:
    """The smallest font (points) of any visible, non-empty text of ``fig``."""
    from matplotlib.text import Text

    sizes = [t.get_fontsize() for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip()]
    return float(min(sizes))


def font_metadata(fig, dpi: float) -> dict:
    """PNG text chunks of a figure's smallest font: ``font_pt_min``, ``font_dpi`` and
    ``font_px_min`` (its height in the picture's own pixels, points x dpi / 72); shown at
    width w, a picture of natural width W shows it at font_px_min x w / W CSS px."""
    pt = min_font_pt(fig)
    return {"font_pt_min": f"{pt:g}", "font_dpi": f"{dpi:g}",
            "font_px_min": f"{pt * dpi / 72:.3f}"}


class MatrixStrips:
    """Draws matrix strips of many models on one layout, fast.

    The colour scales are shared, so everything but the matrices (titles, ticks, colour
    bars) is the same for every model: it is drawn once with matplotlib, and each model
    only has its colour-mapped matrices written into that picture's pixels (numpy), then
    saved as a PNG. About 10 ms per model instead of 200.

    titles : (level,) panel titles (the level names); params : (P,) the grid on both axes
    (the identity at the centre); vmax : (level,) colour-scale maxima (``shared_scale``),
    the minimum 0; layout : "thumbnail" (the gallery's, one line of short labels) or
    "full" (large, each colour bar naming its level); size, dpi : panels of ``size``
    inches at ``dpi`` in the full layout instead; caption : a title line above.
    Every text is at least ``LAYOUTS[layout]["font"]`` points; ``metadata`` holds the PNG
    text chunks that say so (``font_metadata``).
    """

    def __init__(self, titles, params, vmax, *, units: str = "", caption: str = "",
                 layout: str = "thumbnail", size: float | None = None,
                 dpi: int | None = None):
        look = dict(LAYOUTS[layout if size is None else "full"])
        if dpi is not None:
            look["dpi"] = dpi
        if size is not None:  # panels of ``size`` inches, the full layout's labels
            look["panel"] = size * look["dpi"]
        n = len(titles)
        self.vmax = np.asarray(vmax, dtype=np.float64)
        dpi, font = look["dpi"], look["font"]
        px = font * dpi / 72  # one line of text, in pixels
        if "panel" in look:
            panel = look["panel"]
            width = look["left"] + look["right"] + n * panel + (n - 1) * look["gap"]
        else:
            width = look["width"]
            panel = min(look["panel_max"], (width - look["left"] - look["right"]
                                            - (n - 1) * look["gap"]) / n)
        line = 1.3 * px
        top = (2 * line if caption else 0) + 1.7 * look["title"] * dpi / 72
        below = [("xticks", 5 + line), ("gap", 0.6 * px), ("bar", look["bar"]),
                 ("barticks", 5 + line), ("barlabel", 2 * line + 2), ("gap", 0.5 * px),
                 ("note", 2 * line + 4)]
        height = top + panel + sum(h for _, h in below)
        fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)

        def box(x, y_top, w, h):  # pixels from the top left -> figure fractions
            return [x / width, 1 - (y_top + h) / height, w / width, h / height]

        extent = (params[0], params[-1], params[0], params[-1])
        blank = np.zeros((len(params), len(params)))
        ticks = [params[0], params[len(params) // 2], params[-1]]
        bar_top = top + panel + below[0][1] + below[1][1]
        images = []
        for k, (title, vtop) in enumerate(zip(titles, self.vmax)):
            x = look["left"] + k * (panel + look["gap"])
            ax = fig.add_axes(box(x, top, panel, panel))
            image = ax.imshow(blank, origin="lower", cmap=CMAP, vmin=0.0, vmax=vtop,
                              extent=extent, interpolation="nearest", aspect="auto")
            ax.set_title(title, fontsize=look["title"], pad=3)
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=font)
            ax.set_yticks(ticks, [f"{t:g}" for t in ticks] if k == 0 else [], fontsize=font)
            ax.tick_params(length=3, pad=1.5)
            _inside(ax.get_xticklabels())
            bar_ax = fig.add_axes(box(x, bar_top, panel, look["bar"]))
            bar = fig.colorbar(image, cax=bar_ax, orientation="horizontal")
            bar.set_ticks([0.0, vtop / 2, vtop], labels=[_tick(0.0), _tick(vtop / 2),
                                                          _tick(vtop)])
            bar.ax.tick_params(labelsize=font, length=3, pad=1.5)
            _inside(bar.ax.get_xticklabels())
            bar.set_label(quantity(title, short=look["short"]), fontsize=font, labelpad=2,
                          linespacing=1.1)
            images.append(image)
        if caption:
            fig.text(0.5, 1 - 0.4 * line / height, caption, ha="center", va="top",
                     fontsize=look["title"])
        axes = f"both axes: parameter ({units})" if units else "both axes: parameter"
        note = f"{axes}, the identity at the centre; " + (STRIP_NOTE_SHORT if look["short"]
                                                            else STRIP_NOTE)
        wrap = 86 if look["short"] else 170
        fig.text(look["left"] / width, 3 / height, _wrap(note, wrap), ha="left",
                 va="bottom", fontsize=font, linespacing=1.15)
        fig.canvas.draw()
        self.metadata = font_metadata(fig, dpi)
        self.background = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        height_px = self.background.shape[0]
        self.boxes = []  # per panel: pixel rows and columns, and the matrix index of each
        size_p = len(params)
        for image in images:
            extent_px = image.get_window_extent()
            x0, x1 = int(round(extent_px.x0)), int(round(extent_px.x1))
            y0, y1 = height_px - int(round(extent_px.y1)), height_px - int(round(extent_px.y0))
            cols = np.minimum(((np.arange(x0, x1) - x0 + 0.5) / (x1 - x0) * size_p)
                              .astype(int), size_p - 1)
            rows = np.minimum(((np.arange(y0, y1) - y0 + 0.5) / (y1 - y0) * size_p)
                              .astype(int), size_p - 1)[::-1]  # origin lower: row 0 at the bottom
            self.boxes.append((slice(y0, y1), slice(x0, x1), rows, cols))
        plt.close(fig)
        colours = plt.get_cmap(CMAP)(np.linspace(0.0, 1.0, 256))[:, :3]
        self.lut = (colours * 255).round().astype(np.uint8)
        self.bad = np.array([255, 255, 255], dtype=np.uint8)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of every picture, in pixels."""
        return self.background.shape[1], self.background.shape[0]

    def draw(self, file, matrices: np.ndarray) -> None:
        """Write the strip of one model's matrices (level, P, P) to ``file`` (PNG)."""
        from PIL import Image
        from PIL.PngImagePlugin import PngInfo

        picture = self.background.copy()
        for (rows_slice, cols_slice, rows, cols), matrix, top in zip(self.boxes, matrices,
                                                                     self.vmax):
            matrix = np.asarray(matrix, dtype=np.float64)
            index = np.clip(np.nan_to_num(matrix / top, nan=0.0) * 255.0, 0, 255)
            rgb = self.lut[index.astype(np.uint8)]
            rgb[~np.isfinite(matrix)] = self.bad
            picture[rows_slice, cols_slice] = rgb[np.ix_(rows, cols)]
        info = PngInfo()
        for key, value in self.metadata.items():
            info.add_text(key, value)
        Image.fromarray(picture).save(file, format="PNG", compress_level=1, pnginfo=info)

    def close(self) -> None:
        pass


def _inside(labels) -> None:
    """The first and last tick labels aligned to stay above their axis, not beyond it."""
    if len(labels) > 1:
        labels[0].set_horizontalalignment("left")
        labels[-1].set_horizontalalignment("right")


def _tick(value: float) -> str:
    return "0" if value == 0 else f"{value:.2g}"


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def matrix_strip(file, matrices: np.ndarray, titles, params, vmax, *, caption: str = "",
                 units: str = "", layout: str = "full") -> None:
    """One model's matrices (level, P, P) side by side, with a colour bar per level."""
    MatrixStrips(titles, params, vmax, units=units, caption=caption,
                 layout=layout).draw(file, matrices)


FIGURE_FONT = 9.0  # points, the smallest text of the charts (12.5 px at 100 dpi)


def _save_chart(fig, ax, file, title: str, dpi: int) -> None:
    """A chart's title (if any), laid out and saved as a PNG whose text chunks give its
    smallest font (``font_metadata``); the figure closed."""
    if title:
        ax.set_title(title, fontsize=FIGURE_FONT + 2)
    fig.tight_layout()
    fig.canvas.draw()
    fig.savefig(file, metadata=font_metadata(fig, dpi))
    plt.close(fig)


def accuracy_curves(file, params, accuracy: np.ndarray, labels, *, units: str = "",
                    title: str = "", dpi: int = 100) -> None:
    """Accuracy (mid, P) against the parameter, one line per model coloured by its label."""
    fig, ax = plt.subplots(figsize=(7.5, 4.0), dpi=dpi)
    labels = np.asarray(labels)
    for label in (-1, 0, 1):  # invariant drawn last, on top
        rows = accuracy[labels == label]
        if rows.size:
            ax.plot(params, rows.T, color=LABEL_COLOURS[label], alpha=0.35, linewidth=0.9)
            ax.plot([], [], color=LABEL_COLOURS[label],
                    label=f"{LABEL_NAMES[label]} ({rows.shape[0]} models)")
    ax.set_xlabel((f"parameter ({units})" if units else "parameter")
                  + "; one line per model, coloured by its label", fontsize=FIGURE_FONT + 1)
    ax.set_ylabel("accuracy (fraction of test samples correct)", fontsize=FIGURE_FONT + 1)
    ax.tick_params(labelsize=FIGURE_FONT)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=FIGURE_FONT, loc="lower center")
    _save_chart(fig, ax, file, title, dpi)


def importance_bars(file, names, importance, std, *, title: str = "", n_evaluations=None,
                    n_permutations=None, dpi: int = 100) -> None:
    """Horizontal bars of permutation importance with whiskers of one standard deviation.

    importance, std : (feature,) the mean and the standard deviation (ddof=0), over the
        protocol's ``n_evaluations`` test folds, of each fold's mean drop in test accuracy
        over ``n_permutations`` shuffles of the feature (``ml4ml.assess.protocol``).
    """
    order = np.arange(len(names))[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.34 * len(names) + 1.6), dpi=dpi)
    ax.barh(np.arange(len(names)), np.asarray(importance)[order],
            xerr=np.asarray(std)[order], color="#7a7a7a", ecolor="#333333", capsize=2)
    ax.set_yticks(np.arange(len(names)), [names[k] for k in order], fontsize=FIGURE_FONT)
    ax.tick_params(axis="x", labelsize=FIGURE_FONT)
    folds = f"the {n_evaluations} test folds" if n_evaluations else "the test folds"
    shuffles = f" ({n_permutations} shuffles each)" if n_permutations else ""
    ax.set_xlabel(f"bar: mean over {folds} of the drop in test accuracy\nwhen the "
                  f"feature is shuffled{shuffles}\nwhisker: ± 1 standard deviation over "
                  f"{folds}", fontsize=FIGURE_FONT + 0.5)
    ax.grid(axis="x", alpha=0.3)
    _save_chart(fig, ax, file, title, dpi)


# the measure families of ``ml4ml measures rank``: Okabe and Ito's orange and bluish green,
# apart from the class colours (blue, vermillion)
FAMILY_COLOURS = {"matrix": "#E69F00", "response": "#009E73"}


def rank_bars(file, names, auc, low, high, families, *, title: str = "",
              dpi: int = 100) -> None:
    """The ranked measures' hold-out ROC AUC (score,) as dots, best at the top, with
    whiskers from ``low`` to ``high`` (the 95% bootstrap interval), coloured by family
    (``FAMILY_COLOURS``), and a dashed line at 0.5 (chance)."""
    n = len(names)
    y = np.arange(n)[::-1]
    auc, low, high = (np.asarray(v, dtype=np.float64) for v in (auc, low, high))
    families = np.asarray(families).astype(str)
    fig, ax = plt.subplots(figsize=(8.5, 0.3 * n + 2.1), dpi=dpi)
    ax.axvline(0.5, color="#555555", linestyle="--", linewidth=1)
    for family in dict.fromkeys(families.tolist()):  # in order of appearance
        rows = families == family
        ax.errorbar(auc[rows], y[rows], xerr=[auc[rows] - low[rows], high[rows] - auc[rows]],
                    fmt="o", color=FAMILY_COLOURS.get(family, "#777777"), ecolor="#333333",
                    elinewidth=1, capsize=3, markersize=6, label=f"{family} measure")
    ax.set_yticks(y, list(names), fontsize=FIGURE_FONT)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlim(-0.02, 1.02)  # an AUC lies in 0..1
    ax.tick_params(axis="x", labelsize=FIGURE_FONT)
    ax.set_xlabel("dot: ROC AUC on the hold-out models (direction from the regular ones)\n"
                  "whisker: its 95% bootstrap interval over the hold-out models\n"
                  "dashed line: 0.5, chance", fontsize=FIGURE_FONT + 0.5)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=FIGURE_FONT, loc="lower left")
    _save_chart(fig, ax, file, title, dpi)
