"""benchmarks/candidate_margin.py --quick end to end (renders only here: no chessboard, no Middlebury)."""

from __future__ import annotations

import json
import math

from evalutil import load_benchmark


def test_candidate_margin_benchmark_smoke(tmp_path) -> None:
    out = tmp_path / "cm.json"
    res = load_benchmark("candidate_margin").main(
        ["--quick", "--threads", "1", "--settings", "0,8", "0.5,0",
         "--chessboard-dir", str(tmp_path / "none"), "--json", str(out)])
    assert res["sets"] == {"validation exact": 2, "validation camera": 2, "test exact": 2, "test camera": 2}
    assert list(res["rows"]) == ["today (off)", "m 0.5, J 0"]
    for row in res["rows"].values():
        assert all(math.isfinite(m["epe"]) and 0.0 <= m["bad2"] <= 100.0 for m in row.values())
    # A margin of 0.5 on every candidate (J 0) takes fewer of SGBM's answers: the result must differ.
    today, strict = res["rows"]["today (off)"], res["rows"]["m 0.5, J 0"]
    assert any(today[k]["epe"] != strict[k]["epe"] for k in today)
    assert json.loads(out.read_text())["rows"].keys() == res["rows"].keys()
