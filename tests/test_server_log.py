"""Issue 12 item 15: the server logs one line per connection and per job, and one at shutdown; --log-json."""
import json
import re
import signal
import subprocess
import sys

from controlbridge_protocol import Client, JobFailed
from helpers import blockout_images, quick_settings


def _serve(tmp_path, *extra):
    args = [sys.executable, "-m", "controlbridge", "serve", "--model", "tiny", "--port", "0",
            "--output-dir", str(tmp_path / "out"), *extra]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        m = re.search(r"listening on (ws://[0-9.]+:[0-9]+)", line)
        if m:
            return proc, m.group(1), seen
    proc.kill()
    raise AssertionError("server did not start:\n" + "".join(seen))


def _run_jobs_and_stop(proc, url):
    with Client(url, client_name="log-test") as c:
        result = c.run(quick_settings(steps=2), blockout_images(64, 48), timeout=120)
        try:   # refused before it is a job: no job line for it, and the connection stays
            c.run(quick_settings(sampler="magic"), blockout_images(64, 48), timeout=60)
        except JobFailed:
            pass
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    return result, out


def test_text_log_has_a_line_per_connection_and_job_and_at_shutdown(tmp_path):
    proc, url, seen = _serve(tmp_path)
    result, out = _run_jobs_and_stop(proc, url)
    text = "".join(seen) + out
    assert re.search(r"connection \w+ opened from 127\.0\.0\.1", text)
    assert re.search(r"connection \w+ closed \(log-test\)", text)
    job_lines = [line for line in text.splitlines() if line.startswith(f"job {result.job_id} ")]
    assert len(job_lines) == 1, text
    assert re.fullmatch(rf"job {result.job_id} client \w+ model tiny size 64x48 steps 2 [0-9.]+s: saved "
                        + re.escape(result.saved_path), job_lines[0])
    assert "ControlBridge stopped after" in text


def test_log_json_is_one_object_per_line_with_the_job_fields(tmp_path):
    proc, url, seen = _serve(tmp_path, "--log-json")
    result, out = _run_jobs_and_stop(proc, url)
    lines = [json.loads(line) for line in ("".join(seen) + out).splitlines() if line.strip()]   # all JSON
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    jobs = [line for line in lines if line.get("event") == "job"]
    assert len(jobs) == 1
    job = jobs[0]
    assert (job["job"], job["model"], job["size"], job["steps"]) == (result.job_id, "tiny", "64x48", 2)
    assert job["outcome"] == f"saved {result.saved_path}" and job["seconds"] >= 0
    events = [line.get("event") for line in lines]
    assert "connection_opened" in events and "connection_closed" in events
    assert any(line["message"].startswith("ControlBridge stopped after") for line in lines)
