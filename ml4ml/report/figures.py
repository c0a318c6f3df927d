"""Figures of a model database, as PNG files: pure functions of arrays (matplotlib, Agg).

- ``matrix_strip``: one model's variance matrices side by side (confidence and the layer
  statistics of the paper80 features), each level on the colour scale given for it, so
  strips of different models compare at a glance;
- ``accuracy_curves``: accuracy against the transformation parameter for every model,
  coloured by label;
- ``importance_bars``: the top features of an assessor;
- ``shared_scale``: the colour-scale maximum of each level across models.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["MatrixStrips", "matrix_strip", "accuracy_curves", "importance_bars", "shared_scale",
           "LABEL_COLOURS", "CMAP"]

CMAP = "magma"
LABEL_COLOURS = {1: "#2166ac", 0: "#d6604d", -1: "#999999"}
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


class MatrixStrips:
    """Draws matrix strips of many models on one layout, fast.

    The colour scales are shared, so everything but the matrices (titles, ticks, colour
    bars) is the same for every model: it is drawn once with matplotlib, and each model
    only has its colour-mapped matrices written into that picture's pixels (numpy), then
    saved as a PNG. About 10 ms per model instead of 200.

    titles : (level,) panel titles; params : (P,) the grid on both axes (the identity at
    the centre); vmax : (level,) colour-scale maxima (``shared_scale``), the minimum 0.
    """

    def __init__(self, titles, params, vmax, *, units: str = "", caption: str = "",
                 size: float = 1.55, dpi: int = 80):
        n = len(titles)
        self.vmax = np.asarray(vmax, dtype=np.float64)
        fig, axes = plt.subplots(1, n, figsize=(size * n + 0.5, size + 0.45
                                                + (0.2 if caption else 0)),
                                 dpi=dpi, squeeze=False)
        extent = (params[0], params[-1], params[0], params[-1])
        blank = np.zeros((len(params), len(params)))
        ticks = [params[0], params[len(params) // 2], params[-1]]
        images = []
        for ax, title, top in zip(axes[0], titles, self.vmax):
            image = ax.imshow(blank, origin="lower", cmap=CMAP, vmin=0.0, vmax=top,
                              extent=extent, interpolation="nearest")
            ax.set_title(title, fontsize=8, pad=3)
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=6)
            ax.set_yticks(ticks, [f"{t:g}" for t in ticks], fontsize=6)
            ax.tick_params(length=2, pad=1)
            bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
            bar.ax.tick_params(labelsize=5, length=2, pad=1)
            images.append(image)
        if caption:
            fig.suptitle(caption, fontsize=8)
        if units:
            fig.text(0.5, 0.01, f"parameter ({units}) on both axes", ha="center", fontsize=6)
        fig.tight_layout(rect=(0, 0.04 if units else 0, 1, 0.93 if caption else 1),
                         w_pad=0.6)
        fig.canvas.draw()
        self.background = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        height = self.background.shape[0]
        self.boxes = []  # per panel: pixel rows and columns, and the matrix index of each
        size_p = len(params)
        for image in images:
            box = image.get_window_extent()
            x0, x1 = int(round(box.x0)), int(round(box.x1))
            y0, y1 = height - int(round(box.y1)), height - int(round(box.y0))
            cols = np.minimum(((np.arange(x0, x1) - x0 + 0.5) / (x1 - x0) * size_p)
                              .astype(int), size_p - 1)
            rows = np.minimum(((np.arange(y0, y1) - y0 + 0.5) / (y1 - y0) * size_p)
                              .astype(int), size_p - 1)[::-1]  # origin lower: row 0 at the bottom
            self.boxes.append((slice(y0, y1), slice(x0, x1), rows, cols))
        plt.close(fig)
        colours = plt.get_cmap(CMAP)(np.linspace(0.0, 1.0, 256))[:, :3]
        self.lut = (colours * 255).round().astype(np.uint8)
        self.bad = np.array([255, 255, 255], dtype=np.uint8)

    def draw(self, file, matrices: np.ndarray) -> None:
        """Write the strip of one model's matrices (level, P, P) to ``file`` (PNG)."""
        from PIL import Image

        picture = self.background.copy()
        for (rows_slice, cols_slice, rows, cols), matrix, top in zip(self.boxes, matrices,
                                                                     self.vmax):
            matrix = np.asarray(matrix, dtype=np.float64)
            index = np.clip(np.nan_to_num(matrix / top, nan=0.0) * 255.0, 0, 255)
            rgb = self.lut[index.astype(np.uint8)]
            rgb[~np.isfinite(matrix)] = self.bad
            picture[rows_slice, cols_slice] = rgb[np.ix_(rows, cols)]
        Image.fromarray(picture).save(file, format="PNG", compress_level=3)

    def close(self) -> None:
        pass


def matrix_strip(file, matrices: np.ndarray, titles, params, vmax, *, caption: str = "",
                 units: str = "", size: float = 1.55, dpi: int = 80) -> None:
    """One model's matrices (level, P, P) side by side, with a colour bar per level."""
    MatrixStrips(titles, params, vmax, units=units, caption=caption, size=size,
                 dpi=dpi).draw(file, matrices)


def accuracy_curves(file, params, accuracy: np.ndarray, labels, *, units: str = "",
                    title: str = "", dpi: int = 100) -> None:
    """Accuracy (mid, P) against the parameter, one line per model coloured by its label."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=dpi)
    labels = np.asarray(labels)
    for label in (-1, 0, 1):  # invariant drawn last, on top
        rows = accuracy[labels == label]
        if rows.size:
            ax.plot(params, rows.T, color=LABEL_COLOURS[label], alpha=0.35, linewidth=0.9)
            ax.plot([], [], color=LABEL_COLOURS[label],
                    label=f"{LABEL_NAMES[label]} ({rows.shape[0]})")
    ax.set_xlabel(f"parameter ({units})" if units else "parameter")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower center")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(file)
    plt.close(fig)


def importance_bars(file, names, importance, std, *, title: str = "", dpi: int = 100) -> None:
    """Horizontal bars of permutation importance (mean drop in accuracy) with their std."""
    order = np.arange(len(names))[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(names) + 1.0), dpi=dpi)
    ax.barh(np.arange(len(names)), np.asarray(importance)[order],
            xerr=np.asarray(std)[order], color="#4393c3", ecolor="#555555")
    ax.set_yticks(np.arange(len(names)), [names[k] for k in order], fontsize=7)
    ax.set_xlabel("drop in test accuracy when the feature is shuffled")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(file)
    plt.close(fig)
