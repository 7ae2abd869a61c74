"""`controlbridge models`: what a running server can use, as a person reads it.

Everything comes from the server's welcome (its model manager's describe_models / describe_library), so the list
is what jobs may name on that server, not a guess from a folder on this machine.
"""
from typing import Iterable, List

SECTIONS = (("controlnet", "ControlNets"), ("lora", "LoRAs"), ("vae", "VAEs"), ("upscaler", "Upscalers"))


def _size(nbytes) -> str:
    if not isinstance(nbytes, (int, float)) or nbytes <= 0:
        return ""
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:.1f} GiB"
    return f"{nbytes / 2**20:.0f} MiB" if nbytes >= 2**20 else f"{max(1, round(nbytes / 2**10))} KiB"


def _families(entry: dict) -> str:
    return entry.get("family") or "/".join(entry.get("families") or []) or "family unknown"


def _table(rows: Iterable[List[str]]) -> List[str]:
    rows = [r for r in rows]
    if not rows:
        return ["  (none)"]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def format_listing(capabilities, url: str) -> str:
    lines = [f"Checkpoints on {url} (a job names one with --model):"]
    rows = []
    for m in capabilities.models:
        notes = ", ".join(filter(None, ["default" if m["name"] == capabilities.default_model else "",
                                        "loaded" if m.get("loaded") else "", _size(m.get("size"))]))
        rows.append([m["name"], _families(m), notes])
    lines += _table(rows)
    library = capabilities.library or {}
    for kind, title in SECTIONS:
        lines.append(f"{title}:")
        rows = []
        for e in library.get(kind, []):
            extra = _size(e.get("size"))
            if kind == "lora":
                words = e.get("trigger_words") or []
                extra = ", ".join(filter(None, [extra, f"trigger words: {', '.join(words)}" if words else ""]))
            rows.append([e["name"], _families(e), extra])
        lines += _table(rows)
    lines.append(f"ControlNets of the default model: {', '.join(capabilities.controlnets) or 'none'}")
    lines.append(f"Samplers: {', '.join(capabilities.samplers)}")
    problems = library.get("problems", [])
    if problems:
        lines.append("Problems (files the server skipped):")
        # A reason usually starts with the path already.
        lines += [f"  {p['reason'] if p['reason'].startswith(p['path']) else p['path'] + ': ' + p['reason']}"
                  for p in problems]
    return "\n".join(lines)


def format_status(pong, url: str) -> str:
    """`controlbridge status`: the queue, and every loaded model's components with the dtype and device their
    tensors really have (a component half cast to another precision shows both, e.g. bfloat16+float32)."""
    running = f"your job {pong.running} is running" if pong.running else "none of your jobs is running"
    lines = [f"Server {url}: {pong.queued} job(s) queued; {running}", "Loaded models:"]
    if not pong.models:
        lines.append("  (none)")
    for model in pong.models:
        lines.append(f"  {model['name']} ({model.get('family') or 'family unknown'})")
        lines += ["  " + line for line in _table([[name, part.get("dtype", "?"), part.get("device", "?")]
                                                  for name, part in sorted(model.get("components", {}).items())])]
    if pong.workers:      # a cluster (serve --ray)
        lines.append("Workers:")
        lines += ["  " + line for line in _table([[w["name"], w.get("node", ""), w.get("device", ""),
                                                   w["state"] + (f" ({w['job']})" if w.get("job") else ""),
                                                   f"{w.get('jobs_done', 0)} done", ", ".join(w.get("models", []))]
                                                  for w in pong.workers])]
    return "\n".join(lines)
