"""The lab configurations name what exists: make targets, pinned versions, executable
scripts. (A launch needs the network; these tests check the files a launch reads.)"""

from __future__ import annotations

import json
import os
import re

from ..conftest import ROOT


def _make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), flags=re.M))


def test_the_dev_container_runs_make_targets_that_exist():
    config = json.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text())
    command = config["postCreateCommand"].split()
    assert command[0] == "make" and set(command[1:]) <= _make_targets()
    assert "python:3.11" in config["image"]


def test_binder_installs_the_pinned_environment():
    post_build = ROOT / "binder" / "postBuild"
    assert os.access(post_build, os.X_OK)
    script = post_build.read_text()
    pinned = re.search(r'"(torch==[^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert pinned in script and "-c constraints.txt -e ." in script
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
