"""bench/export_bench.py runs end to end on a tiny model and prints one table row per batch size."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "export_bench.py"


def test_export_bench_smoke(tiny_model_dir, capsys):
    spec = importlib.util.spec_from_file_location("export_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--models", str(tiny_model_dir), "--batch-sizes", "1,3", "--min-seconds", "0"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {tiny_model_dir.name} |")]
    assert [r.split("|")[2].strip() for r in rows] == ["1", "3"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")[3:-1]]
        assert float(cells[0]) > 0 and float(cells[2]) > 0 and cells[-1].endswith("x")
