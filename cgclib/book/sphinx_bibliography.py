"""Sphinx extension: the reference list labelled the way the text cites.

The chapters cite author and year ("Gupta, 2026", `bibtex_reference_style: author_year`);
pybtex's default label style would head each entry of the reference list with an
alphabetic key ("[Gup26]") that appears nowhere in the text. This registers the pybtex
style `authoryear`: entries sorted by author and year, each labelled "Author, year" (two
authors joined by "and", more as "Author et al."), and `_config.yml` makes it the default.
"""

from __future__ import annotations

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle


def author_year_label(entry) -> str:
    """'Gupta, 2026', 'Frantar and Alistarh, 2023' or 'Sun et al., 2024'."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [" ".join(p.last_names) for p in people]
    if not names:
        who = entry.fields.get("title", entry.key)
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            yield author_year_label(entry)


class AuthorYearStyle(UnsrtStyle):
    default_label_style = AuthorYearLabels
    default_sorting_style = SortingStyle


def setup(app):
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
