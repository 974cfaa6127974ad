"""perf_analyzer, installed by the project's own script, against a real tritonserver through benchmarks/perf.py."""
from __future__ import annotations

import csv
import json
import subprocess

import pytest

from benchmarks import perf
from server.launcher import REPO_ROOT

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def perf_analyzer():
    """The wrapper from scripts/install_perf_analyzer.sh (`make perf-analyzer`); installed here if absent, so CI
    always exercises it."""
    if not perf.DEFAULT_BINARY.exists():
        done = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "install_perf_analyzer.sh")], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
    assert subprocess.run([str(perf.DEFAULT_BINARY), "--version"], capture_output=True).returncode == 0
    return perf.DEFAULT_BINARY


def test_input_data_is_length_prefixed_base64():
    data = perf.input_data("objectclear_inpaint", max_side=64)
    row = data["data"][0]
    assert set(row) == {"IMAGE", "MASK", "SEED"}
    raw = perf.base64.b64decode(row["IMAGE"]["content"]["b64"])
    assert int.from_bytes(raw[:4], "little") == len(raw) - 4 and raw[4:12] == b"\x89PNG\r\n\x1a\n"
    assert set(perf.input_data("remove_object")["data"][0]) == {"IMAGE", "PROMPT", "SEED"}
    assert set(perf.input_data("sam3_segment")["data"][0]) == {"IMAGE", "PROMPT"}
    json.dumps(data)


def test_short_perf_analyzer_pass_writes_table_and_plot(perf_analyzer, model_repository, tmp_path):
    code = perf.main(["--model", "remove_object", "--presets", "ultra_fast", "--concurrency", "1:2",
                      "--max-side", "256", "--total-requests", "4",  # no stability search: CI shares its CPUs
                      "--perf-analyzer", str(perf_analyzer), "--out", str(tmp_path)])
    assert code == 0
    with open(tmp_path / "remove_object.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["protocol"], int(r["concurrency"])) for r in rows} == {(p, c) for p in ("http", "grpc") for c in (1, 2)}
    assert all(float(r["throughput"]) > 0 and float(r["avg_ms"]) > 0 for r in rows)
    table = (tmp_path / "remove_object.md").read_text()
    assert table.count("| ultra_fast |") == 4
    assert (tmp_path / "remove_object.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
