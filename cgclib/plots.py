"""One look for every figure in the book (seaborn theme, sizes, colours by role), and the
gluing of a section's key figure into its chapter page."""

from __future__ import annotations

from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import seaborn as sns
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# colours by role, reused across chapters so a reader learns them once
VERDICT_COLORS = {"holds": "#1a7f37", "fails": "#cf222e", "inconclusive": "#9a6700"}
# lines told apart by dash as well as by colour (for print and for colour vision): ten
# colours, and no two neighbours in the cycle share a dash
DASHES = ["-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), "-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1))]
DPI = 150


def use_book_style() -> None:
    """Apply the book's plotting style (call once at the top of a notebook)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    mpl.rcParams.update(
        {
            "figure.figsize": (7.0, 4.2),
            "figure.dpi": DPI,
            "savefig.dpi": DPI,
            "axes.prop_cycle": cycler(color=sns.color_palette("colorblind", len(DASHES))) + cycler(linestyle=DASHES),
            "axes.titlesize": "medium",
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )


def axes_per_model(
    names: list[str], width: float = 5.5, height: float = 3.6, **subplots: Any
) -> tuple[Figure, dict[str, Axes]]:
    """One panel per model, side by side, each `width` x `height` inches: the figure and the
    panels by model name (extra keywords go to `plt.subplots`, e.g. sharey=True)."""
    fig, axes = plt.subplots(1, len(names), figsize=(width * len(names), height), squeeze=False, **subplots)
    return fig, dict(zip(names, axes[0], strict=True))


def glue_figure(key: str, fig: Figure | None = None) -> None:
    """Glue `fig` (the current figure by default) as `key`, so that the chapter page shows
    it, numbered and captioned, beside the argument it supports (`{glue:figure}`); the
    notebook still shows it where it is made. Outside a kernel this does nothing."""
    from .ledger import in_kernel

    if not in_kernel():
        return
    from myst_nb import glue

    glue(key, fig if fig is not None else plt.gcf(), display=False)
