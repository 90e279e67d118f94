"""What this CPU can do natively, read from ``/proc/cpuinfo`` (no library imports, no timing).

Why it matters: the same dtype costs very differently on different x86 CPUs. On an AVX2-only
machine torch bfloat16 is emulated and ran ViT-S/16 8x *slower* than float32 (issue 17); with
AVX512-BF16 or AMX-BF16 it ran 2.5x faster. ONNX Runtime's int8 MatMul uses VNNI (AVX512-VNNI
or AVX-VNNI) where present and plain AVX2 otherwise. The service records the ISA in ``/info``
and the benchmarks in their headers, and refuses to pick bf16 where it would be emulated.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

# The flags (Linux /proc/cpuinfo names) that decide which kernels run; the order is the report's.
KNOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
               "amx_bf16", "amx_int8")  # fmt: skip


@dataclass(frozen=True)
class CpuIsa:
    """The vector ISA of this machine's CPU, as far as inference kernels care."""

    model: str
    flags: frozenset[str]

    @property
    def native_bf16(self) -> bool:
        """bfloat16 matmuls run in hardware (AVX512-BF16 or AMX-BF16), not emulated in fp32."""
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)

    @property
    def vnni(self) -> bool:
        """int8 dot products in one instruction (ONNX Runtime's quantised MatMul uses them)."""
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & self.flags)

    @property
    def kind(self) -> str:
        """One word for reports: ``amx``, ``avx512-bf16``, ``avx512``, ``avx2``, or ``other``."""
        if "amx_bf16" in self.flags:
            return "amx"
        if "avx512_bf16" in self.flags:
            return "avx512-bf16"
        if "avx512f" in self.flags:
            return "avx512"
        return "avx2" if "avx2" in self.flags else "other"

    def as_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "kind": self.kind,
            "flags": [f for f in KNOWN_FLAGS if f in self.flags],
            "native_bf16": self.native_bf16,
            "vnni": self.vnni,
        }


def parse_cpuinfo(text: str) -> CpuIsa:
    """The ISA from the text of ``/proc/cpuinfo`` (the first processor's ``flags`` and model name)."""
    model, flags = platform.processor() or "?", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model in ("?", platform.processor()):
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return CpuIsa(model=model or "?", flags=flags)


def cpu_isa(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuIsa:
    """This machine's ISA; an empty flag set where ``/proc/cpuinfo`` is missing (not Linux)."""
    try:
        return parse_cpuinfo(cpuinfo.read_text())
    except OSError:
        return CpuIsa(model=platform.processor() or "?", flags=frozenset())
