"""Where a request's time goes inside the server, from its own Prometheus counters.

The service records decode and encode time per request, queue time per image, inference time per
batch, the handler's whole time per request, and images per batch. Scraping ``/metrics`` before
and after a load run and differencing the ``_sum``/``_count`` pairs gives the run's means; the
client's latency minus the handler's time is what HTTP, the event loop's queues and the client
itself add. This is how a slow closed loop is told apart from a busy resource.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

SERIES = {  # (metric family, stage label or None) -> name in the summary
    ("jepa_request_seconds", None): "handler",
    ("jepa_stage_seconds", "decode"): "decode",
    ("jepa_stage_seconds", "queue"): "queue",
    ("jepa_stage_seconds", "inference"): "inference",
    ("jepa_stage_seconds", "encode"): "encode",
    ("jepa_batch_size", None): "batch_size",
}


def scrape(url: str) -> dict[str, tuple[float, float]]:
    """``name -> (sum, count)`` for each of :data:`SERIES` from ``url/metrics``."""
    text = httpx.get(url + "/metrics", timeout=10).text
    out: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            kind = sample.name.rsplit("_", 1)[-1]
            if kind not in ("sum", "count"):
                continue
            name = SERIES.get((family.name, sample.labels.get("stage")))
            if name is not None:
                out.setdefault(name, [0.0, 0.0])[0 if kind == "sum" else 1] = sample.value
    return {k: (v[0], v[1]) for k, v in out.items()}


def breakdown(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Means over the run between two scrapes: ms per request (handler, decode, encode), per image
    (queue), per batch (inference), and images per batch; plus the number of batches."""
    means: dict[str, float] = {}
    for name, (total, count) in after.items():
        total0, count0 = before.get(name, (0.0, 0.0))
        n = count - count0
        if n > 0:
            scale = 1.0 if name == "batch_size" else 1000.0
            means[name if name == "batch_size" else f"{name}_ms"] = round(scale * (total - total0) / n, 2)
            if name == "batch_size":
                means["batches"] = n
    return means
