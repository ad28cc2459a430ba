"""benchmarks/soak.py end to end, shortened: a real node process, 30 Hz input, windows and a summary.

The 30-minute soak itself is a benchmark, not a test; this only proves the script works (the node starts in
a subprocess, frames reach it across processes, outputs and diagnostics come back, RSS is sampled, the node
is stopped cleanly), so that a long run is not wasted on a broken script.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from evalutil import load_benchmark

pytestmark = [pytest.mark.ros, pytest.mark.slow]



def test_soak_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    soak = load_benchmark("soak")
    out = tmp_path / "soak.json"
    transport_before = os.environ.get("FASTDDS_BUILTIN_TRANSPORTS")
    code = soak.main([
        "--duration", "12", "--warmup", "4", "--window", "4", "--frames", "2", "--rss-interval", "1",
        "--startup-timeout", "60", "--json", str(out),
    ])
    text = capsys.readouterr().out
    # main() must not leave its Fast DDS transport setting behind for the rest of the test session.
    assert os.environ.get("FASTDDS_BUILTIN_TRANSPORTS") == transport_before
    assert code in (0, 1), text  # 2 = the node never became active
    data = json.loads(out.read_text())
    windows, summary = data["windows"], data["summary"]
    assert [w["window"] for w in windows] == [0, 1, 2]
    assert sum(w["sent"] for w in windows) == summary["frames_sent"] > 0.8 * 30 * 12
    assert summary["outputs_received"] > 0 and windows[-1]["received"] > 0
    assert all(w["rss_mib_median"] > 0 for w in windows)
    assert summary["rss_mib_warmup_end"] > 0 and summary["rss_mib_end"] > 0
    assert summary["latency_last_window"]["latency_ms"]["p50"] > 0
    assert summary["node_stop"]["clean"], text
    assert summary["problems"] == {}, summary["problems"]
    assert "| window |" in text and "Verdict:" in text and "RSS end of warm-up" in text


def test_soak_retries_a_node_that_never_reports_active_in_a_fresh_domain(capsys: pytest.CaptureFixture[str]
                                                                         ) -> None:
    """Each start that does not report active within --startup-timeout is stopped and retried in another
    domain, up to --start-attempts; then exit status 2.  (0.5 s is shorter than any node start here.)"""
    soak = load_benchmark("soak")
    code = soak.main(["--duration", "2", "--warmup", "0", "--frames", "1", "--startup-timeout", "0.5",
                      "--start-attempts", "2", "--stop-timeout", "10"])
    text = capsys.readouterr().out
    assert code == 2, text
    domains = [line.split()[2].rstrip(",") for line in text.splitlines() if line.startswith("[soak] domain")]
    assert len(domains) == 2 and domains[0] != domains[1], text
    assert "retrying in a new domain (2 of 2)" in text and text.count("did not activate in 0.5 s") == 2, text
