"""Atomic JSON files hold standard JSON: non-finite floats become null."""

import json
import math

from fedattack.io import read_json, write_json


def test_non_finite_floats_are_written_as_null(tmp_path):
    path = tmp_path / "run.json"
    write_json(path, {"epsilon": math.inf, "rounds": [{"auc": math.nan, "acc": 0.5}],
                      "pair": (1.0, -math.inf), "name": "x"})
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    json.loads(text, parse_constant=lambda token: (_ for _ in ()).throw(ValueError(token)))
    assert read_json(path) == {"epsilon": None, "rounds": [{"auc": None, "acc": 0.5}],
                               "pair": [1.0, None], "name": "x"}
