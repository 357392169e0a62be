"""The API reference page documents every module of the library."""

from __future__ import annotations

import pkgutil
import re

import cgclib

from ..conftest import ROOT


def test_every_module_is_on_the_api_page():
    page = (ROOT / "book" / "api.md").read_text()
    documented = set(re.findall(r"^\.\. automodule:: (\S+)$", page, flags=re.M))
    modules = {m.name for m in pkgutil.walk_packages(cgclib.__path__, "cgclib.") if not m.ispkg}
    assert modules, "no modules found"
    assert modules - documented == set(), "modules missing from book/api.md"
    assert documented - modules - {"cgclib"} == set(), "book/api.md names modules that do not exist"
