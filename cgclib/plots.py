"""One look for every figure in the book (seaborn theme, sizes, colours by role)."""

from __future__ import annotations

from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# colours by role, reused across chapters so a reader learns them once
VERDICT_COLORS = {"holds": "#1a7f37", "fails": "#cf222e", "inconclusive": "#9a6700"}


def use_book_style() -> None:
    """Apply the book's plotting style (call once at the top of a notebook)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    mpl.rcParams.update(
        {
            "figure.figsize": (7.0, 4.2),
            "figure.dpi": 110,
            "savefig.dpi": 110,
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
