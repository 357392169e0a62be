"""One look for every figure in the book (seaborn theme, sizes, colours by role)."""

from __future__ import annotations

import matplotlib as mpl
import seaborn as sns

# colours by role, reused across chapters so a reader learns them once
VERDICT_COLORS = {"holds": "#1a7f37", "fails": "#cf222e", "inconclusive": "#9a6700"}


def use_book_style() -> None:
    """Apply the book's plotting style (call once at the top of a notebook)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    mpl.rcParams.update({
        "figure.figsize": (7.0, 4.2),
        "figure.dpi": 110,
        "savefig.dpi": 110,
        "axes.titlesize": "medium",
        "axes.spines.top": False,
        "axes.spines.right": False,
    })
