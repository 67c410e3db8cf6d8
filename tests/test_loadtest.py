"""tools/loadtest.py, self-contained (--bundle): it starts `indextts2-onnx serve` on the tiny bundle,
registers a synthetic voice, runs two client levels against that one server, stops it, and reports.

Nothing asserts on a timing (a shared 2-core machine): only that every request was answered, that the
numbers are there and consistent, and that the table has a row per level."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def load_tool():
    spec = importlib.util.spec_from_file_location("loadtest", REPO / "tools" / "loadtest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_percentile():
    loadtest = load_tool()
    assert loadtest.percentile([], 50) is None
    assert loadtest.percentile([3.0], 95) == 3.0
    assert loadtest.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert loadtest.percentile([0.0, 10.0], 95) == pytest.approx(9.5)


def test_self_contained_load_test(tiny_bundle, tmp_path, capsys):
    loadtest = load_tool()
    out = tmp_path / "report.json"
    code = loadtest.main(["--bundle", str(tiny_bundle), "--clients", "1,2", "--requests", "4",
                          "--max-codes", "12", "--steps", "2", "--text", "Hello there.",
                          "--server-arg=--workers=2", "--server-arg=--threads=1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    assert report["failed"] == 0
    assert [lv["clients"] for lv in report["levels"]] == [1, 2]
    for lv in report["levels"]:
        assert (lv["sent"], lv["ok"], lv["rejected_429"], lv["failed"]) == (4, 4, 0, 0), lv
        assert lv["throughput"] > 0 and lv["audio_s_total"] > 0 and lv["requests_per_s"] > 0
        assert lv["ttfa_source"].startswith("server")
        assert 0 <= lv["ttfa_p50_s"] <= lv["ttfa_p95_s"]
        assert 0 < lv["latency_p50_s"] <= lv["latency_p95_s"]
        for key in ("rss_start_mb", "rss_max_mb", "rss_end_mb"):
            assert lv[key] > 0, key
        assert lv["rss_max_mb"] >= max(lv["rss_start_mb"], lv["rss_end_mb"])
        assert lv["max_in_flight"] is not None and lv["max_batch_rows"] is not None
    rows = [line for line in printed.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["1", "2"]
    assert report["markdown"] in printed
