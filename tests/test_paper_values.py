"""The reported numbers: every entry loads, with its source; bad keys and files are named."""

import math

import pytest
import yaml

from cgclib.paper_values import PaperValueError, _load, paper_table, paper_value
from cgclib.paths import data_dir


def test_every_value_and_table_loads_with_a_source():
    data = yaml.safe_load((data_dir() / "paper_values.yaml").read_text())
    for key in data["values"]:
        value = paper_value(key)
        assert value.source and value.bibkey and value.setting
    for key in data["tables"]:
        table = paper_table(key)
        assert not table.frame.empty and table.source


def test_ranges_and_tables_have_their_reported_shape():
    assert paper_value("ma.s0_unstructured").value == (0.55, 0.65)
    frame = paper_table("ma.llama2_7b_unstructured_ppl").frame
    assert list(frame.columns) == ["magnitude", "wanda", "sparsegpt"]
    assert math.isnan(frame.loc[0.8, "magnitude"])


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(PaperValueError, match="cgc.density_vs_wanda_rho"):
        paper_value("cgc.no_such_value")
    with pytest.raises(PaperValueError, match="known tables"):
        paper_table("nothing")


def test_malformed_entries_are_reported(tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "sources": {"s": {"citation": "c", "bibkey": "b"}},
                "values": {
                    "bad.range": {"source": "s", "value": [0.9, 0.1], "setting": "x"},
                    "bad.number": {"source": "s", "value": "many", "setting": "x"},
                    "bad.source": {"source": "nope", "value": 1, "setting": "x"},
                },
                "tables": {},
            }
        )
    )
    _load.cache_clear()
    with pytest.raises(PaperValueError, match="exceeds high"):
        paper_value("bad.range", path)
    with pytest.raises(PaperValueError, match="finite number"):
        paper_value("bad.number", path)
    with pytest.raises(PaperValueError, match="unknown source"):
        paper_value("bad.source", path)
