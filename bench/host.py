"""The machine a benchmark ran on, torch-free: every benchmark prints :func:`host_line` first.

The same backend and dtype cost very differently across CPUs (bf16 is native with AMX or
AVX512-BF16, emulated and 8x slower than fp32 on an AVX2-only machine: service/cpu_features.py),
so a figure without the ISA it was measured on cannot be compared with another.
"""

from __future__ import annotations

import os
import platform

from bench.report_md import isa_line
from service.cpu_features import cpu_isa


def host() -> dict[str, object]:
    isa = cpu_isa()
    return {
        "cpu": isa.model,
        "isa": isa.as_dict(),
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
    }


def host_line() -> str:
    """``# Machine: MODEL, N CPUs usable, Python X. ISA: ...`` (the ISA as every report states it)."""
    h = host()
    return f"# Machine: {h['cpu']}, {h['affinity']} CPUs usable, Python {h['python']}. {isa_line(h)}"
