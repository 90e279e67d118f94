"""Prometheus metrics, in a registry owned by one app (several apps in one process never collide)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds: from sub-millisecond encode steps to multi-second queues under overload.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STAGES = ("decode", "queue", "inference", "encode")

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    images: Counter
    request_seconds: Histogram
    stage_seconds: Histogram
    batch_size: Histogram
    inference_runs: Counter
    queue_depth: Gauge
    model: Info

    @classmethod
    def create(cls, max_batch_size: int) -> Metrics:
        reg = CollectorRegistry(auto_describe=True)
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, max_batch_size})
        return cls(
            registry=reg,
            requests=Counter("jepa_requests", "POST /embed requests by outcome", ["outcome"], registry=reg),
            images=Counter("jepa_images", "Images by outcome", ["outcome"], registry=reg),
            request_seconds=Histogram(
                "jepa_request_seconds",
                "Whole POST /embed handling time (successful requests)",
                buckets=LATENCY_BUCKETS,
                registry=reg,
            ),
            stage_seconds=Histogram(
                "jepa_stage_seconds",
                "Time per stage: decode and encode per request, queue per image, inference per batch",
                ["stage"],
                buckets=LATENCY_BUCKETS,
                registry=reg,
            ),
            batch_size=Histogram("jepa_batch_size", "Images per inference call", buckets=sizes, registry=reg),
            inference_runs=Counter(
                "jepa_inference_runs",
                "Inference calls by mode: narrow (one worker's threads) or wide (all threads, a lone batch)",
                ["mode"],
                registry=reg,
            ),
            queue_depth=Gauge("jepa_queue_depth", "Images waiting for inference", registry=reg),
            model=Info("jepa_model", "The served model and backend", registry=reg),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
