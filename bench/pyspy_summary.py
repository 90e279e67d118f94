"""Summarise a py-spy ``--format raw`` recording (``bench/gpu_bench.py --profile``) per thread.

For each thread group (``jepa-decode_0`` .. ``_7`` count as one): its samples, how many sat idle
(a pool thread waiting for work, or the event loop inside uvloop's C code, which is also where it
waits for sockets), and the frames where the rest were spent. With a ``--gil`` recording only the
thread holding the GIL is sampled, so the samples per thread say who held it and for how long.

    python -m bench.pyspy_summary docs/profiles/pyspy-torch-bf16-idle.txt.gz [--top 6]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import re
from pathlib import Path

THREAD = re.compile(r"thread \((\d+)\):? ?(.*)")
IDLE_LEAVES = ("_worker", "Runner.run")  # a pool thread waiting for work; the event loop in C


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
            group = re.sub(r"_\d+$", "", name)
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
