"""py-spy for the benchmarks: start a recording of a server, and summarise one per thread.

:func:`record` is what ``bench/report.py`` (``serve_bench --profile``) and ``bench/gpu_bench.py
--profile`` run. :func:`summarise` reads a ``--format raw`` recording: for each thread group
(``jepa-decode_0`` .. ``_7`` count as one), its samples, how many sat idle (a pool thread
waiting for work, or the event loop inside uvloop's C code, which is also where it waits for
sockets), and the frames where the rest were spent. With a ``--gil`` recording only the thread
holding the GIL is sampled, so the samples per thread say who held it and for how long.

    python -m bench.pyspy docs/profiles/h200-pyspy-torch-bf16-idle.txt.gz [--top 6]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import re
import shutil
import subprocess
import sys
from pathlib import Path

THREAD = re.compile(r"thread \((\d+)\):? ?(.*)")
IDLE_LEAVES = ("_worker", "Runner.run")  # a pool thread waiting for work; the event loop in C


def binary() -> str | None:
    """py-spy on the PATH or beside this interpreter (a venv's bin/ that is not on the PATH)."""
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def record(pid: int, out: Path, duration_s: float, rate: int, *flags: str) -> subprocess.Popen | None:
    """Start ``py-spy record`` of ``pid`` for ``duration_s``, every thread named, raw collapsed stacks
    to ``out``, without pausing the process; ``flags`` add e.g. ``--idle`` or ``--gil``. None when
    py-spy is not installed. Its messages (the sample and error counts) go to the returned process's
    ``stdout`` pipe."""
    spy = binary()
    if spy is None:
        return None
    cmd = [spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(out), "--threads", "--nonblocking"]
    cmd += ["--duration", str(int(duration_s)), "--rate", str(rate), *flags]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def thread_group(name: str) -> str:
    """A pool thread's name without its number: ``jepa-decode_3`` -> ``jepa-decode``."""
    return name.rstrip("0123456789").rstrip("_")


def summarise(path: Path, top: int = 6) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    samples: collections.Counter[str] = collections.Counter()
    idle: collections.Counter[str] = collections.Counter()
    frames: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    with opener(path, "rt") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            thread, *calls = stack.split(";")
            match = THREAD.match(thread)
            name = (match.group(2) or match.group(1)) if match else thread
            group = thread_group(name)
            names = [re.sub(r" \(.*\)$", "", c) for c in calls]
            samples[group] += int(count)
            if not names or names[-1] in IDLE_LEAVES:
                idle[group] += int(count)
            else:
                frames[group][" <- ".join(reversed(names[-3:]))] += int(count)
    total = sum(samples.values())
    lines = [f"{path.name}: {total} samples", "", "| thread | samples | idle | busy in Python frames | top frames |"]
    lines.append("| --- | ---: | ---: | ---: | --- |")
    for group, n in samples.most_common():
        busy = n - idle[group]
        tops = "; ".join(f"{k} ({c})" for k, c in frames[group].most_common(top))
        lines.append(f"| {group} | {n} | {idle[group]} | {busy} ({busy / n:.0%}) | {tops} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=3)
    a = p.parse_args(argv)
    for path in a.paths:
        print(summarise(path, a.top), end="\n\n")


if __name__ == "__main__":
    main()
