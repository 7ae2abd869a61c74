"""`controlbridge serve --ray auto --workers 1` as a user starts it: a job, `controlbridge status`, SIGTERM."""
import re
import signal

from controlbridge_protocol import Client
from helpers import blockout_images, quick_settings


def test_serve_ray_auto_runs_jobs_on_its_worker_and_stops_cleanly(spawn_server, capsys):
    from controlbridge.cli import main
    spawned = spawn_server("--ray", "auto", "--workers", "1")
    with Client(spawned.url) as c:
        result = c.run(quick_settings(), blockout_images(), timeout=300)   # waits for the worker to come up
    assert result.worker == "w1" and result.saved_path.startswith(str(spawned.output_dir))
    assert main(["status", "--url", spawned.url]) == 0
    status = capsys.readouterr().out
    assert re.search(r"Workers:\n\s+w1\s+\S+\s+cpu\s+idle\s+1 done\s+tiny", status), status
    spawned.process.send_signal(signal.SIGTERM)
    assert spawned.process.wait(timeout=120) == 0
    output = spawned.process.stdout.read()
    assert re.search(rf"job {result.job_id} .* on worker w1", output), output
    assert "ControlBridge stopped" in output

