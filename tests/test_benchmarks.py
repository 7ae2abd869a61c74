"""benchmarks/speed.py's CPU modes run end to end on the tiny model: stock, engine and whole-server rows (client in
another process, real websocket) and the server's host steps, and what they write is what a reader checks."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_rows_and_cpu_side_write_results(tmp_path):
    out, rows = tmp_path / "RESULTS.md", tmp_path / "results.jsonl"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--tiny", "--device", "cpu",
                          "--dtype", "bf16", "--rows", "cpu-side,a,server-a", "--iters", "2", "--warmup", "1",
                          "--out", str(out), "--json", str(rows)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    results = [json.loads(line) for line in rows.read_text().splitlines()]
    paths = {r["path"]: r for r in results}
    assert set(paths) == {"stock diffusers", "ours: whole server"} | {r["path"] for r in results
                                                                       if r["path"].startswith("ours: ") and
                                                                       r["path"] != "ours: whole server"}
    assert len(paths) == 3
    for r in results:
        assert r["row"] == "a" and r["n"] == 2 and r["p50"] > 0 and r["p95"] >= r["p50"]
        assert r["x_stock"] > 0 and r["floor_ms"] > 0      # FLOPs counted on the stock call, for every path
        assert "bfloat16" in r["dtype"]                     # read back from the modules after the run
    # the stock copy is built apart from ours and never touched by our engine: it stays what was asked
    assert paths["stock diffusers"]["dtype"] == "bfloat16"
    assert paths["ours: whole server"]["elapsed_ms_p50"] > 0

    text = out.read_text()
    assert "CPU only" in text and "no GPU" in text and "tiny model dry run" in text
    assert "| **total** |" in text                          # the cpu-side table
    assert "| a | " in text and "stock diffusers" in text and "ours: whole server" in text
