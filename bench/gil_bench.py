"""Decode beside Python: one decode thread's rate next to one pure-Python busy thread, as a share of its solo rate.

A service decodes in threads while its event loop (and, on a GPU, the inference thread) runs
Python. Whatever the decode does with the GIL held, and every time it takes the GIL back after a
C call that released it, it waits for that Python thread (up to the switch interval, 5 ms, per
take). This measures that cost directly on 3 MP real-photo JPEGs (``bench.images.jpegs_at``):
each round times the decode thread alone, then beside a busy thread, for each path:

- ``pillow``: ``Image.open`` + ``draft`` + ``load`` + ``jepa.preprocess.prepare_image``, what
  ``service.decode.decode_image`` did before ``service/jpeg_nogil.py`` (Pillow feeds libjpeg
  64 KiB per call);
- ``service``: ``service.decode.decode_image`` as it is now.

Besides wall time it reads the decode thread's CPU time and run-queue wait from
``/proc/self/task/TID/schedstat``, so a machine busy with other jobs (run-queue wait) can be told
apart from waiting for the GIL (the rest of the time off-CPU). The share is the median of the rounds.

Each is run at Python's default switch interval (5 ms) and at the service's
(``--gil-switch-interval-ms``, which ``python -m service`` sets for its process).

    python -m bench.gil_bench [--rounds 5] [--seconds 2] [--paths pillow,service] [--switch-ms 5,1] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from bench.host import host_line
from bench.images import jpegs_at
from jepa.config import Preprocess
from jepa.preprocess import prepare_image
from service.decode import DecodeOptions, decode_image, draft_target
from service.settings import Settings

Decode = Callable[[bytes], np.ndarray]


def pillow_path(options: DecodeOptions) -> Decode:
    """The decode as it was before jpeg_nogil: Pillow's chunked load, then prepare_image."""

    def decode(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as image:
            target = draft_target(options)
            if options.jpeg_draft and min(image.size) >= 2 * target:
                image.draft(None, (target, target))
            image.load()
            return prepare_image(image, options.preprocess, options.image_size)

    return decode


def service_path(options: DecodeOptions) -> Decode:
    return lambda data: decode_image(data, 0, options)


PATHS = {"pillow": pillow_path, "service": service_path}


@dataclass(frozen=True)
class Timing:
    """Per image, in ms: wall time, the thread's CPU time, its wait for a core, and the rest
    (off-CPU but runnable: for a thread that does no I/O, waiting for the GIL)."""

    images: int
    wall_ms: float
    cpu_ms: float
    runqueue_ms: float

    @property
    def gil_wait_ms(self) -> float:
        return max(0.0, self.wall_ms - self.cpu_ms - self.runqueue_ms)


def _schedstat() -> tuple[int, int]:
    """This thread's (CPU ns, run-queue wait ns) from the kernel; zeros where there is no /proc."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
            cpu, wait = f.read().split()[:2]
        return int(cpu), int(wait)
    except OSError:
        return 0, 0


def decode_loop(decode: Decode, files: Sequence[bytes], seconds: float) -> Timing:
    """Decode ``files`` round-robin for ``seconds`` in a fresh thread; its per-image timing."""
    out: list[Timing] = []

    def run() -> None:
        decode(files[0])  # warm (imports, caches) outside the timed part
        (cpu0, wait0), n, t0 = _schedstat(), 0, time.perf_counter()
        while n < 3 or time.perf_counter() - t0 < seconds:
            decode(files[n % len(files)])
            n += 1
        wall = time.perf_counter() - t0
        cpu1, wait1 = _schedstat()
        out.append(Timing(n, wall / n * 1e3, (cpu1 - cpu0) / n / 1e6, (wait1 - wait0) / n / 1e6))

    thread = threading.Thread(target=run, name="decode")
    thread.start()
    thread.join()
    return out[0]


def busy_rate(seconds: float) -> float:
    """Loop iterations per second of the busy thread alone (what it loses beside the decode)."""
    counts: list[int] = []
    running = [True]
    thread = threading.Thread(target=_spin, args=(running, counts), name="busy")
    thread.start()
    time.sleep(seconds)
    running[0] = False
    thread.join()
    return counts[0] / seconds


def _spin(running: list[bool], counts: list[int]) -> None:
    x = 0
    while running[0]:
        x += 1
    counts.append(x)


def beside_busy_thread(decode: Decode, files: Sequence[bytes], seconds: float) -> tuple[Timing, float]:
    """The same loop while another thread runs pure Python (it never releases the GIL by itself);
    also the busy thread's iterations per second meanwhile."""
    running, counts = [True], []
    spinner = threading.Thread(target=_spin, args=(running, counts), name="busy", daemon=True)
    t0 = time.perf_counter()
    spinner.start()
    try:
        timing = decode_loop(decode, files, seconds)
    finally:
        running[0] = False
        spinner.join()
    return timing, counts[0] / (time.perf_counter() - t0)


@dataclass(frozen=True)
class Round:
    solo: Timing
    busy: Timing
    busy_thread_share: float  # the busy thread's iterations/s beside the decode, over its solo rate

    @property
    def share(self) -> float:
        """Decode rate beside the busy thread over the solo rate."""
        return self.solo.wall_ms / self.busy.wall_ms

    @property
    def share_on_idle_cores(self) -> float:
        """The same with each thread's run-queue wait (other jobs on the cores) taken out: an estimate."""
        return (self.solo.wall_ms - self.solo.runqueue_ms) / (self.busy.wall_ms - self.busy.runqueue_ms)


@dataclass(frozen=True)
class Row:
    path: str
    switch_ms: float
    rounds: list[Round]

    def median(self, key: Callable[[Round], float]) -> float:
        return statistics.median(key(r) for r in self.rounds)

    @property
    def middle(self) -> Round:
        """The round with the median share (its timings are the ones shown)."""
        return sorted(self.rounds, key=lambda r: r.share)[len(self.rounds) // 2]


def measure(
    paths: Sequence[str],
    switch_ms: Sequence[float],
    files: Sequence[bytes],
    options: DecodeOptions,
    rounds: int,
    seconds: float,
) -> list[Row]:
    """Rounds interleave every (path, switch interval), so a change in the machine's load hits all alike."""
    runs: dict[tuple[str, float], list[Round]] = {}
    default = sys.getswitchinterval()
    try:
        for _ in range(rounds):
            for ms in switch_ms:
                sys.setswitchinterval(ms / 1000)
                for name in paths:
                    decode = PATHS[name](options)
                    solo = decode_loop(decode, files, seconds)
                    alone = busy_rate(seconds / 2)
                    busy, beside = beside_busy_thread(decode, files, seconds)
                    runs.setdefault((name, ms), []).append(Round(solo, busy, beside / alone))
    finally:
        sys.setswitchinterval(default)
    return [Row(name, ms, results) for (name, ms), results in runs.items()]


def markdown(rows: Sequence[Row]) -> str:
    lines = [
        "| path | switch interval ms | decode rate beside busy thread / solo (median) | rounds "
        "| same, run-queue wait taken out | solo ms/image | beside ms/image | GIL wait ms/image "
        "| run-queue wait ms/image | busy thread's rate kept |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        mid, shares = r.middle, ", ".join(f"{x.share:.2f}" for x in r.rounds)
        lines.append(
            f"| {r.path} | {r.switch_ms:g} | **{r.median(lambda x: x.share):.0%}** | {shares} "
            f"| {r.median(lambda x: x.share_on_idle_cores):.0%} | {mid.solo.wall_ms:.1f} | {mid.busy.wall_ms:.1f} "
            f"| {mid.busy.gil_wait_ms:.1f} | {mid.busy.runqueue_ms:.1f} "
            f"| {r.median(lambda x: x.busy_thread_share):.0%} |"
        )
    return "\n".join(lines)


def as_json(rows: Sequence[Row]) -> list[dict]:
    return [
        {
            "path": r.path,
            "switch_ms": r.switch_ms,
            "share_median": r.median(lambda x: x.share),
            "share_on_idle_cores_median": r.median(lambda x: x.share_on_idle_cores),
            "rounds": [
                {**asdict(x), "share": x.share, "gil_wait_ms": x.busy.gil_wait_ms, "idle_cores": x.share_on_idle_cores}
                for x in r.rounds
            ],
        }
        for r in rows
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--paths", default="pillow,service", help=f"comma-separated, of: {', '.join(PATHS)}")
    service_ms = Settings.model_fields["gil_switch_interval_ms"].default
    p.add_argument(
        "--switch-ms",
        default=f"5,{service_ms:g}",
        help=f"sys.setswitchinterval values to try, in ms (Python's default 5, the service's {service_ms:g})",
    )
    p.add_argument("--megapixels", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0, help="per timed loop")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--json", help="also write the rows here")
    a = p.parse_args(argv)
    paths = [s for s in a.paths.split(",") if s]
    if unknown := set(paths) - set(PATHS):
        raise SystemExit(f"unknown --paths {sorted(unknown)}; choose from {sorted(PATHS)}")
    options = DecodeOptions(Preprocess(resize_size=round(a.image_size * 256 / 224)), a.image_size, 100_000_000)
    files = jpegs_at(a.megapixels, count=4)
    print(host_line(), flush=True)
    rows = measure(paths, [float(s) for s in a.switch_ms.split(",")], files, options, a.rounds, a.seconds)
    print(
        f"{a.megapixels:g} MP JPEGs ({np.mean([len(f) for f in files]) / 1024:.0f} KiB), {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )
    print(markdown(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(as_json(rows), f, indent=2)


if __name__ == "__main__":
    main()
