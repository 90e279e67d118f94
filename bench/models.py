"""The benchmark's model directories, made once and cached under ``runs/bench/``.

``vit-small-16-224`` is the issue's reference (ViT-S/16 at 224, random weights, fixed seed),
exported with ``python -m export --int8`` so the service can pick ONNX Runtime as it would in
production; ``<name>-hf`` is the same weights as a Hugging Face directory for the naive server,
and ``<name>.pth.tar`` as an official I-JEPA training checkpoint.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CACHE = Path("runs/bench")


def reference_model(cache: Path = CACHE, size: str = "small", patch: int = 16, image: int = 224) -> Path:
    """Our model directory with the exported graphs (export needs onnx/onnxscript; skipped if absent)."""
    import torch

    import jepa

    out = cache / f"vit-{size}-{patch}-{image}"
    if (out / "config.json").is_file():
        return out
    src = cache / f"src-{size}-{patch}-{image}"  # the weights before export
    torch.manual_seed(0)
    model = jepa.build_encoder(size, patch_size=patch, image_size=image, name=f"bench-vit-{size}-{patch}-{image}")
    jepa.save_model_dir(model, src)
    cmd = [sys.executable, "-m", "export", str(src), "--out", str(out), "--int8"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"[bench] export failed ({' '.join(cmd)}); serving the torch model only:\n{done.stderr[-2000:]}")
        return src
    return out


def hf_copy(model_dir: Path) -> Path:
    """The same weights as an HF ``IJepaModel`` directory (for :mod:`bench.naive_server`)."""
    import jepa
    from bench.hf_dir import write_hf_dir

    out = model_dir.parent / f"{model_dir.name}-hf"
    if not (out / "config.json").is_file():
        write_hf_dir(jepa.load_encoder(model_dir), out)
    return out


def meta_copy(model_dir: Path) -> Path:
    """The same weights as an official ``.pth.tar`` (``module.``-prefixed ``encoder`` and
    ``target_encoder``, the layout of facebookresearch/ijepa's checkpoints)."""
    import torch

    import jepa

    out = model_dir.parent / f"{model_dir.name}.pth.tar"
    if not out.is_file():
        state = {f"module.{k}": v for k, v in jepa.load_encoder(model_dir).state_dict().items()}
        torch.save({"encoder": state, "target_encoder": state, "epoch": 0}, out)
    return out
