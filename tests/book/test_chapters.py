"""Chapter discovery, parameter parsing and type checks, and `cgc run` into run folders."""

import json
from pathlib import Path

import pytest

from cgclib.book import cli
from cgclib.book.chapters import (
    ChapterError,
    get_chapter,
    list_chapters,
    parse_parameters_cell,
    resolve_parameters,
    run_chapter,
)
from cgclib.ledger import load_results

ROOT = Path(__file__).resolve().parents[2]


def test_the_book_lists_its_chapters_in_toc_order():
    chapters = list_chapters(ROOT)
    assert "phase_transitions" in chapters
    for chapter in chapters.values():
        assert chapter.path.is_file()
        assert chapter.parameters(), f"{chapter.name} declares no parameters"


def test_parameters_cell_is_parsed_with_defaults_and_help(demo_book):
    params = get_chapter("demo", demo_book).parameters()
    assert list(params) == ["seed", "scale", "label", "grid", "verbose"]
    assert params["scale"].default == 1.5 and params["scale"].help == "a float"
    assert params["grid"].type_name == "list"


def test_a_long_help_may_stand_on_the_comment_lines_above_its_parameter():
    source = "# fmt: off\n# the first\n# line and the second\nx = 1\ny = 2  # beside\nz = 3\n# fmt: on\n"
    params = parse_parameters_cell(source)
    assert params["x"].help == "the first line and the second"
    assert params["y"].help == "beside"
    assert params["z"].help == ""  # a comment above belongs to the line it stands on, not the next
    chapters = list_chapters(ROOT)
    assert all(p.help for c in chapters.values() for p in c.parameters().values())  # every parameter says what it is


def test_parameters_cell_must_be_plain_assignments():
    with pytest.raises(ChapterError, match="not `name = literal`"):
        parse_parameters_cell("import os\nx = 1")
    with pytest.raises(ChapterError, match="not a literal"):
        parse_parameters_cell("x = os.getcwd()")


def test_values_are_coerced_to_the_parameter_types(demo_book):
    chapter = get_chapter("demo", demo_book)
    values = resolve_parameters(
        chapter, [("seed", "3"), ("scale", "2"), ("label", "123"), ("grid", "[0.2, 1]"), ("verbose", "true")]
    )
    assert values == {"seed": 3, "scale": 2.0, "label": "123", "grid": [0.2, 1.0], "verbose": True}


@pytest.mark.parametrize(
    "name, raw, message",
    [
        ("seed", "1.5", "expects an integer"),
        ("seed", "abc", "expects an integer"),
        ("scale", "fast", "expects a number"),
        ("grid", "0.5", "expects a list"),
        ("grid", "[a, b]", "list of numbers"),
        ("verbose", "yes", "true or false"),
    ],
)
def test_bad_types_are_named(demo_book, name, raw, message):
    with pytest.raises(ChapterError, match=message):
        resolve_parameters(get_chapter("demo", demo_book), [(name, raw)])


def test_unknown_names_list_the_valid_ones(demo_book):
    with pytest.raises(ChapterError, match="chapters: demo"):
        get_chapter("nope", demo_book)
    with pytest.raises(ChapterError, match="its parameters: seed, scale, label, grid, verbose"):
        resolve_parameters(get_chapter("demo", demo_book), [("sede", "1")])


def test_cli_reports_errors_with_exit_code_2(demo_book, capsys):
    assert cli.main(["--root", str(demo_book), "run", "nope"]) == 2
    assert "unknown chapter 'nope'" in capsys.readouterr().err
    assert cli.main(["--root", str(demo_book), "run", "demo", "-p", "seed", "x"]) == 2
    assert "expects an integer" in capsys.readouterr().err


def test_cli_list_shows_parameters_with_defaults(demo_book, capsys):
    assert cli.main(["--root", str(demo_book), "list"]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "scale = 1.5 (float)  # a float" in out


def test_run_writes_a_fresh_folder_per_run(demo_book, capsys):
    code = cli.main(["--root", str(demo_book), "run", "demo", "-q", "-p", "scale", "2.5", "-p", "seed", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    first = sorted((demo_book / "runs" / "demo").iterdir())
    assert len(first) == 1 and str(first[0]) in printed
    records = load_results(first[0] / "demo.json")
    assert records[0]["ours"]["value"] == 5.0  # scale * (seed + 1), from the injected values
    assert json.loads((first[0] / "parameters.json").read_text())["parameters"] == {"scale": 2.5, "seed": 1}
    assert (first[0] / "demo.ipynb").is_file()

    second = run_chapter("demo", {"scale": 2.5, "seed": 1}, root=demo_book, progress=False)
    folders = sorted((demo_book / "runs" / "demo").iterdir())
    assert len(folders) == 2 and second.directory != first[0]
    assert load_results(first[0] / "demo.json") == records  # the earlier run is untouched


def test_papermill_reads_every_parameter_cgc_reads():
    """papermill parses a parameters cell with its own regular expressions and silently
    ignores a line it cannot read (an override then never reaches the chapter)."""
    import jupytext
    from papermill.translators import PythonTranslator

    for name, chapter in list_chapters(ROOT).items():
        notebook = jupytext.read(chapter.path)
        (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert {p.name for p in PythonTranslator.inspect(cell)} == set(chapter.parameters()), name


def test_a_failed_run_says_so_and_its_partial_ledger_is_marked_incomplete(demo_book, capsys):
    code = cli.main(["--root", str(demo_book), "run", "demo", "-q", "-p", "verbose", "true"])
    assert code == 1
    assert "incomplete.json" in capsys.readouterr().err
    (folder,) = sorted((demo_book / "runs" / "demo").iterdir())
    record = json.loads((folder / "parameters.json").read_text())
    assert "finished" not in record and "RuntimeError" in record["error"] and record["failed"]
    assert not (folder / "demo.json").exists()
    partial = json.loads((folder / "demo.incomplete.json").read_text())
    assert [r["id"] for r in partial] == ["demo.scale"]  # recorded before the failure


def test_bad_values_leave_no_run_folder(demo_book, capsys):
    code = cli.main(["--root", str(demo_book), "run", "demo", "-q", "-p", "scale", ".nan"])
    assert code == 2 and "scale must be finite, got nan" in capsys.readouterr().err
    assert not (demo_book / "runs").exists()


def test_results_are_readable_by_others(demo_book):
    run = run_chapter("demo", {"seed": 2}, root=demo_book, progress=False)
    for path in (run.results, run.directory / "parameters.json"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~_umask(), path


def _umask() -> int:
    from cgclib.storage import UMASK

    return UMASK
