"""``python -m export SOURCE --out DIR [--fp16] [--int8] [--uint8-input] [--triton REPO]``.

CLI only: parses arguments into :class:`~export.pipeline.ExportOptions`, shows progress, prints
the verification table, and turns every expected failure into one message and a non-zero exit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.contract import EXTERNAL_DATA_THRESHOLD
from export.options import ExportOptions
from jepa.contract import RECORD_FILE, ExportRecord

EXIT_FAILED = 1
EXIT_BAD_SOURCE = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    p.add_argument(
        "source",
        help="our model directory, an official .pth.tar, an HF IJepaModel directory, or a name for one: a short "
        "name (python -m jepa models), a Hub id org/name[@revision] or a checkpoint URL (downloaded first)",
    )
    p.add_argument("--out", type=Path, required=True, help="model directory to write (weights, config, graphs)")
    p.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx (float32 I/O, float16 inside)")
    p.add_argument("--int8", action="store_true", help="also write model.int8.onnx (ONNX Runtime dynamic int8)")
    p.add_argument("--uint8-input", action="store_true", help="also write model.uint8.onnx (uint8 [B,S,S,3] input)")
    p.add_argument("--triton", type=Path, metavar="REPO", help="also write a Triton model repository here")
    p.add_argument("--triton-max-batch", type=int, default=32, help="Triton max_batch_size (default 32)")
    p.add_argument("--images", type=Path, help="photos for verification (default: scikit-image's bundled photos)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 17 (default 18)")
    p.add_argument(
        "--context-encoder", action="store_true", help="official checkpoints: export 'encoder', not 'target_encoder'"
    )
    p.add_argument("--num-heads", type=int, help="head count, for official checkpoints of non-standard widths")
    p.add_argument("--fp32-max-rel", type=float, default=1e-4, help="max relative error, fp32 (default 1e-4)")
    p.add_argument(
        "--fp16-max-rel", type=float, default=1e-2, help="max relative error of the fp16 graph (default 1e-2)"
    )
    p.add_argument("--int8-min-cos", type=float, default=0.99, help="min mean cosine of int8 vs fp32 on photos (0.99)")
    p.add_argument(
        "--external-data-threshold", type=int, default=EXTERNAL_DATA_THRESHOLD, metavar="BYTES",
        help="weights above this size go to a .data file beside the graph (default: just under 2 GiB)",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.opset < 17:
        p.error(f"--opset must be >= 17 (LayerNormalization), got {args.opset}")
    if args.triton_max_batch < 1:
        p.error(f"--triton-max-batch must be >= 1, got {args.triton_max_batch}")
    if not 0 < args.int8_min_cos <= 1:
        p.error(f"--int8-min-cos must be in (0, 1], got {args.int8_min_cos}")
    return args


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    return ExportOptions(
        source=args.source, out=args.out, fp16=args.fp16, int8=args.int8, uint8_input=args.uint8_input,
        triton=args.triton, triton_max_batch=args.triton_max_batch, images=args.images, opset=args.opset,
        encoder="encoder" if args.context_encoder else "target_encoder", num_heads=args.num_heads,
        fp32_max_rel=args.fp32_max_rel, fp16_max_rel=args.fp16_max_rel, int8_min_cos=args.int8_min_cos,
        external_data_threshold=args.external_data_threshold,
    )  # fmt: skip


def format_table(report: ExportRecord) -> str:
    """One markdown row per graph: the worst errors over all checks and the threshold it met."""
    rows = [
        "| graph | max abs | max rel | min cos | mean global cos (photos) | threshold |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, g in report.graphs.items():
        s, t = g.summary, g.thresholds
        limit = f"rel <= {t.max_rel:g}" if t.max_rel is not None else f"cos >= {t.min_photos_global_cos:g}"
        cells = f"{s.max_abs:.2e} | {s.max_rel:.2e} | {s.min_cos:.6f} | {s.photos_global_cos_mean:.6f}"
        rows.append(f"| {name} | {cells} | {limit} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    import jepa
    from export.onnx import ExportError
    from export.pipeline import ensure_writable, run_export
    from export.triton import TritonError
    from export.verify import VerificationError

    opts = options_from_args(args)
    steps = 2 + args.fp16 + args.int8 + args.uint8_input + (args.triton is not None)
    try:
        ensure_writable(opts.out)  # before a possibly long model load
    except OSError as e:
        print(f"error: export failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    with tqdm(total=steps + 1, desc="load model", file=sys.stderr, disable=args.no_progress) as bar:
        try:
            encoder = jepa.load_encoder(opts.source, encoder=opts.encoder, num_heads=opts.num_heads)
        except (jepa.JepaError, ValueError) as e:
            print(f"error: cannot load {opts.source}: {e}", file=sys.stderr)
            return EXIT_BAD_SOURCE
        bar.update()

        started: list[str] = []

        def step(label: str) -> None:  # a step starts: the previous one is done
            if started:
                bar.update()
            started.append(label)
            bar.set_description(label)

        try:
            report = run_export(encoder, opts, step)
            bar.update()
        except (OSError, ExportError, VerificationError, TritonError) as e:  # OSError: --out, --images
            print(f"error: export failed: {e}", file=sys.stderr)
            return EXIT_FAILED
    print_report(report, opts.out)
    return 0


def print_report(report: ExportRecord, out: Path) -> None:
    print(format_table(report))
    v = report.versions
    print(
        f"exporter {report.exporter}, opset {report.opset}; torch {v['torch']}, onnx {v['onnx']}, "
        f"onnxruntime {v['onnxruntime']}, onnxscript {v['onnxscript']}"
    )
    print(f"verified on {report.verification_images['source']} photos; wrote {out}/{RECORD_FILE}")
    if report.triton is not None:
        print(f"Triton repository: {report.triton}")


if __name__ == "__main__":
    sys.exit(main())
