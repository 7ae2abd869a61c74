"""Issue 12's bounded soak: about a minute of many clients, live sessions, one client that never reads and one
that stalls mid-attachments, against one real server. Every other client's jobs complete, and the process's
memory stays within a stated bound over its level after warm-up (the server runs in this process: the model, the
outboxes and every held attachment are counted; the clients here hold little)."""
import random
import threading
import time

from controlbridge_protocol import Client, ImageAttachment, LiveResult, Result
from controlbridge_protocol.framing import encode
from controlbridge_protocol.messages import Generate
from controlbridge.server.config import Limits
from helpers import blockout_images, quick_settings
from test_bad_input import RawPeer, assert_still_serving
from test_limits import never_reading_client

SOAK_S = 40                  # attack phase; warm-up and the final wait come on top
JOB_CLIENTS = 6
LIVE_CLIENTS = 2
CHURN_CLIENTS = 24           # connect, hello, status, close, again
OUTBOX = 8 * 2**20
# What the attackers may make the server hold: the never-reader's outbox (8 MiB, then it is closed; 400 asks for
# a ~200 KB result would be ~80 MB unbounded), the staller's announced job (8 MiB until the 3 s deadline), and
# allocator slack around the ordinary clients' small jobs. Measured on the 2-core machine: +26 to +42 MB.
RSS_BOUND_MB = 100


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_soak_many_clients_with_a_reader_that_never_reads_and_a_staller(make_server):
    server = make_server(limits=Limits(max_outbox_bytes=OUTBOX, attachment_deadline_s=3))
    transport = server.server.transport
    small = blockout_images(64, 48)
    # Warm-up: one of each kind of work, so the baseline holds the pipelines the soak will use.
    with Client(server.url) as c:
        big = c.run(quick_settings(steps=1), blockout_images(256, 256), timeout=300)   # ~200 KB PNG
        c.run(quick_settings(steps=2), small, timeout=300)
        c.send_live_frame(quick_settings(steps=2, sampler="lcm", denoise=0.6, cfg=1.0), small)
        while not isinstance(c.next_event(timeout=300), LiveResult):
            pass
    # The staller's 8 MiB job, made before the baseline: the test's own buffers are not the server's growth.
    stalled = encode(Generate("stall", quick_settings(), blockout_images(1024, 1024)))
    baseline = rss_mb()
    peak = [baseline]
    stop = threading.Event()
    failures, done_jobs, live_results, stalls = [], {}, {}, []


    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.25)

    def job_client(n):
        done_jobs[n] = 0
        try:
            with Client(server.url, client_name=f"soak-jobs-{n}") as c:
                while not stop.is_set() or done_jobs[n] == 0:
                    result = c.run(quick_settings(steps=2, seed=n), small, timeout=300)
                    assert isinstance(result, Result) and result.saved_path
                    c.history_item(result.job_id, timeout=60)     # a reader that reads: served in full
                    done_jobs[n] += 1
        except Exception as e:  # noqa: BLE001 - reported below, with the client's name
            failures.append(f"job client {n}: {e!r}")

    def live_client(n):
        live_results[n] = 0
        settings = quick_settings(steps=2, sampler="lcm", denoise=0.6, cfg=1.0)
        color, depth = blockout_images(64, 48)
        pixels = bytearray(color.data)
        try:
            with Client(server.url, client_name=f"soak-live-{n}") as c:
                while not stop.is_set():
                    pixels[random.randrange(len(pixels))] ^= 0xFF      # a moving camera: never "unchanged"
                    moved = ImageAttachment(color.name, color.encoding, color.width, color.height, bytes(pixels))
                    c.send_live_frame(settings, [moved, depth])
                    end = time.monotonic() + 0.3
                    while time.monotonic() < end:
                        if isinstance(c.next_event(timeout=0.1), LiveResult):
                            live_results[n] += 1
        except Exception as e:  # noqa: BLE001
            failures.append(f"live client {n}: {e!r}")

    def churn_client(n):
        try:
            while not stop.is_set():
                with Client(server.url, client_name=f"soak-churn-{n}") as c:
                    c.status(timeout=60)
                time.sleep(random.uniform(0.1, 0.5))
        except Exception as e:  # noqa: BLE001
            failures.append(f"churn client {n}: {e!r}")

    def staller():
        # Announces an 8 MiB job and sends half of it, again and again: each is dropped at the deadline.
        peer = RawPeer(server.url)
        try:
            while not stop.is_set():
                peer.send(stalled[0], stalled[1])
                stalls.append(peer.next_error()["code"])
        finally:
            peer.close()

    threads = [threading.Thread(target=sample)]
    threads += [threading.Thread(target=job_client, args=(n,)) for n in range(JOB_CLIENTS)]
    threads += [threading.Thread(target=live_client, args=(n,)) for n in range(LIVE_CLIENTS)]
    threads += [threading.Thread(target=churn_client, args=(n,)) for n in range(CHURN_CLIENTS)]
    threads += [threading.Thread(target=staller)]
    for t in threads:
        t.start()
    never_reader = never_reading_client(server, big.job_id, requests=400)
    time.sleep(SOAK_S)
    stop.set()
    for t in threads:
        t.join(300)
    never_reader.close()

    growth = peak[0] - baseline
    print(f"\nsoak: RSS baseline {baseline:.0f} MB, peak {peak[0]:.0f} MB (+{growth:.0f} MB, bound "
          f"{RSS_BOUND_MB} MB); jobs {sum(done_jobs.values())} {done_jobs}; live results {live_results}; "
          f"stalls refused {len(stalls)}; peak outbox {transport.peak_outbox_bytes / 2**20:.1f} MiB")
    assert not failures, failures
    assert all(done_jobs[n] >= 1 for n in range(JOB_CLIENTS)), done_jobs
    assert all(live_results[n] >= 1 for n in range(LIVE_CLIENTS)), live_results
    assert stalls and set(stalls) == {"missing_attachment"}, stalls
    assert not any(c.client_name == "never-reads" for c in transport.connections.values())
    assert transport.peak_outbox_bytes <= OUTBOX
    assert growth <= RSS_BOUND_MB, f"RSS grew {growth:.0f} MB over the warmed-up {baseline:.0f} MB"
    assert not any(t.is_alive() for t in threads)
    assert_still_serving(server)
