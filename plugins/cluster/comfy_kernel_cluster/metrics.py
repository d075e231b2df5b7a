"""``GET /metrics`` of a front-end, in Prometheus' text format.

Queue depth is the shared queue as this front-end sees it; prompts finished
count the ``finished`` notes this front-end received since it started (every
front-end receives all of them, so any one can be scraped); worker figures
come from the workers' announcements.
"""

from __future__ import annotations

from typing import Any


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def render(executor: Any, workers: list[dict[str, Any]]) -> str:
    running = len(executor.running)
    lines = [
        "# HELP ck_queue_pending Prompts queued and not yet taken by a worker.",
        "# TYPE ck_queue_pending gauge",
        f"ck_queue_pending {len(executor.heap)}",
        "# HELP ck_queue_running Prompts a worker is running.",
        "# TYPE ck_queue_running gauge",
        f"ck_queue_running {running}",
        "# HELP ck_prompts_finished_total Prompts finished since this front-end started, by job status.",
        "# TYPE ck_prompts_finished_total counter",
    ]
    for status in ("completed", "failed", "cancelled"):
        lines.append(f'ck_prompts_finished_total{{status="{status}"}} {executor.finished_counts.get(status, 0)}')
    lines += ["# HELP ck_workers Workers that announced themselves recently.", "# TYPE ck_workers gauge",
              f"ck_workers {len(workers)}",
              "# HELP ck_worker_busy Prompts a worker runs now.", "# TYPE ck_worker_busy gauge"]
    for w in workers:
        lines.append(f'ck_worker_busy{{worker="{_label(w.get("id"))}"}} {len(w.get("running") or [])}')
    lines += ["# HELP ck_worker_prompts_total Prompts a worker finished since it started.",
              "# TYPE ck_worker_prompts_total counter"]
    for w in workers:
        lines.append(f'ck_worker_prompts_total{{worker="{_label(w.get("id"))}"}} {int(w.get("done") or 0)}')
    lines += ["# HELP ck_worker_busy_seconds_total Seconds a worker spent running prompts since it started.",
              "# TYPE ck_worker_busy_seconds_total counter"]
    for w in workers:
        lines.append(f'ck_worker_busy_seconds_total{{worker="{_label(w.get("id"))}"}} '
                     f'{float(w.get("busy_seconds") or 0):.3f}')
    for key, name, text in (("memory_free", "ck_device_memory_free_bytes", "Free memory of a worker's device."),
                            ("memory_total", "ck_device_memory_total_bytes", "Memory of a worker's device.")):
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        for w in workers:
            for d in w.get("devices") or []:
                if d.get(key) is not None:
                    lines.append(f'{name}{{worker="{_label(w.get("id"))}",device="{_label(d.get("device"))}"}} '
                                 f"{int(d[key])}")
    return "\n".join(lines) + "\n"
