"""The CPU engines a user could pick instead of ours, on this machine's ISA: model-only images/s
and cosine to torch fp32 on real photos.

Engines: ONNX Runtime fp32 / int8 (our graphs: what the service serves), OpenVINO's runtime on the
same ONNX graphs (its default precision, which is bf16 on CPUs with AMX or AVX512-BF16, and with
``INFERENCE_PRECISION_HINT=f32``), torch eager fp32 / bf16 and ``torch.compile`` fp32 / bf16. The
engines are timed in rounds, each round running every engine once (median time per call), so a
shared machine's drift spreads over all of them alike; the table gives the median over rounds.

    python -m bench.cpu_engines runs/bench/vit-small-16-224 --out runs/bench/engines
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.ceiling import time_forward
from bench.report import machine
from bench.report_md import isa_line
from jepa.contract import OUTPUT_SPECS

Runner = Callable[[np.ndarray], np.ndarray]  # float32 [B, 3, S, S] -> global embedding [B, D]


def ort(graph: Path) -> Runner:
    from service.backends.onnx import make_session

    session = make_session(graph, ["CPUExecutionProvider"], 0, spin=True)  # as the service builds it
    name = session.get_inputs()[0].name
    return lambda x: np.asarray(session.run([OUTPUT_SPECS["global"].tensor], {name: x})[0])


def openvino(graph: Path, precision: str | None) -> Runner:
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
    compiled = ov.Core().compile_model(str(graph), "CPU", config)
    request = compiled.create_infer_request()
    out = compiled.output("global_embedding")
    return lambda x: np.asarray(request.infer({0: x})[out])


def torch_engine(model_dir: Path, dtype: str, compiled: bool) -> Runner:
    import torch

    import jepa

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    model = jepa.load_encoder(model_dir).to(torch_dtype)
    forward = torch.compile(model) if compiled else model

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        return forward(torch.from_numpy(x).to(torch_dtype)).mean(dim=1).float().numpy()

    return run


def engines(model_dir: Path) -> dict[str, Callable[[], Runner]]:
    graphs = {"fp32": model_dir / "model.onnx", "int8": model_dir / "model.int8.onnx"}
    return {
        "onnxruntime fp32": lambda: ort(graphs["fp32"]),
        "onnxruntime int8 (served default)": lambda: ort(graphs["int8"]),
        "openvino fp32 graph (default precision)": lambda: openvino(graphs["fp32"], None),
        "openvino fp32 graph (f32 hint)": lambda: openvino(graphs["fp32"], "f32"),
        "openvino int8 graph (ORT dynamic quant)": lambda: openvino(graphs["int8"], None),
        "torch eager fp32": lambda: torch_engine(model_dir, "fp32", compiled=False),
        "torch eager bf16": lambda: torch_engine(model_dir, "bf16", compiled=False),
        "torch.compile fp32": lambda: torch_engine(model_dir, "fp32", compiled=True),
        "torch.compile bf16": lambda: torch_engine(model_dir, "bf16", compiled=True),
    }


def photo_batch(model_dir: Path, count: int) -> np.ndarray:
    from jepa.formats.native import read_config
    from jepa.photos import load_photos
    from jepa.preprocess import normalize

    config = read_config(model_dir)
    return normalize(load_photos(config, None, count).pixels, config.preprocess)


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).min())


def measure(model_dir: Path, batches: tuple[int, ...], rounds: int, min_time_s: float, only: set[str],
            save: Callable[[dict], None]) -> dict:  # fmt: skip
    """Every engine's rates (median over rounds) and cosine; ``save`` gets the results after each round."""
    photos = photo_batch(model_dir, max(batches))
    runners, results = {}, {}
    reference = torch_engine(model_dir, "fp32", compiled=False)(photos)
    for name, make in engines(model_dir).items():
        if name not in only:
            continue
        print(f"[engines] preparing {name}", flush=True)
        try:
            runners[name] = make()
            for b in batches:  # compile / first-call costs (one per shape) outside the timing
                runners[name](np.ascontiguousarray(photos[:b]))
        except Exception as e:  # an engine missing here is a result to report, not a crash
            results[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    times: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batches} for n in runners}
    for r in range(rounds):
        for name, run in runners.items():
            for b in batches:
                x = np.ascontiguousarray(photos[:b])
                times[name][b].append(time_forward(lambda r=run, x=x: r(x), min_time_s))
            rates = {b: b / float(np.median(t)) for b, t in times[name].items()}
            results[name] = {"images_s": rates, "rounds": {b: [b / s for s in t] for b, t in times[name].items()},
                             "min_cosine_vs_torch_fp32": cosine_min(run(photos), reference)}  # fmt: skip
            print(f"[engines] round {r}: {name}: " + ", ".join(f"b{b} {v:.1f}/s" for b, v in rates.items()), flush=True)
        save(results)
    return results


def markdown(res: dict) -> str:
    batches = [int(b) for b in res["batches"]]
    lines = [
        f"Machine: {res['machine']['cpu']}, {res['machine']['affinity']} CPUs usable. {isa_line(res['machine'])}",
        f"Model: `{res['model']}`; {res['rounds']} rounds, median.",
        "",
        "| engine | " + " | ".join(f"batch {b} img/s" for b in batches) + " | min cosine vs torch fp32 |",
        "| --- | " + " | ".join("---:" for _ in batches) + " | ---: |",
    ]
    for name, r in res["engines"].items():
        if "error" in r:
            lines.append(f"| {name} | " + " | ".join("-" for _ in batches) + f" | {r['error']} |")
            continue
        rates = " | ".join(f"{r['images_s'][b]:.1f}" for b in batches)
        lines.append(f"| {name} | {rates} | {r['min_cosine_vs_torch_fp32']:.6f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path, help="an exported model directory (model.onnx, model.int8.onnx)")
    p.add_argument("--out", type=Path, default=Path("runs/bench/engines"))
    p.add_argument("--batches", default="1,8")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--min-time", type=float, default=1.0)
    p.add_argument("--only", default="", help="comma-separated engine names (default: all)")
    p.add_argument("--skip", default="", help="comma-separated engine names to leave out")
    a = p.parse_args(argv)
    batches = tuple(int(b) for b in a.batches.split(","))
    only = {x.strip() for x in a.only.split(",") if x.strip()} or set(engines(a.model_dir))
    only -= {x.strip() for x in a.skip.split(",") if x.strip()}
    res = {"machine": machine(), "model": str(a.model_dir), "batches": batches, "rounds": a.rounds}
    a.out.mkdir(parents=True, exist_ok=True)

    def save(engines_done: dict) -> None:
        res["engines"] = engines_done
        (a.out / "results.json").write_text(json.dumps(res, indent=2, default=str))
        (a.out / "results.md").write_text(markdown(res) + "\n")

    save(measure(a.model_dir, batches, a.rounds, a.min_time, only, save))
    print(markdown(res))


if __name__ == "__main__":
    main()
