"""The baseline: what a user would write today around transformers' ``IJepaModel``.

A FastAPI endpoint that reads the upload, decodes it inline with Pillow, runs the Hugging Face
image processor and one forward pass per request, and returns the mean-pooled embedding as JSON
floats. No batching, no thread-pool decode, no reduced-scale JPEG decoding, no ONNX Runtime.
It is deliberately plain; the benchmark measures our service against it side by side.

    python -m bench.naive_server HF_DIR --port 8001 [--device cuda --dtype bfloat16]
"""

from __future__ import annotations

import argparse
import io
from typing import Annotated

import torch
import uvicorn
from fastapi import FastAPI, File, HTTPException, UploadFile
from PIL import Image, UnidentifiedImageError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def create_app(model_dir: str, device: str = "cpu", dtype: str = "float32") -> FastAPI:
    """Load the HF directory once and expose ``POST /embed`` (multipart field ``image``).

    On a GPU this is what the model card suggests: the model moved to ``device`` in ``dtype``,
    and each request's pixels after it."""
    from transformers import AutoImageProcessor, IJepaModel

    processor = AutoImageProcessor.from_pretrained(model_dir)
    model = IJepaModel.from_pretrained(model_dir).to(device=device, dtype=DTYPES[dtype]).eval()
    app = FastAPI(title="naive IJepaModel server")

    @app.get("/ready")
    def ready() -> dict:
        return {"ready": True}

    @app.post("/embed")
    def embed(image: Annotated[UploadFile, File()]) -> dict:  # a sync route: FastAPI runs it in its thread pool
        try:
            pil = Image.open(io.BytesIO(image.file.read())).convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise HTTPException(status_code=400, detail=f"bad image: {e}") from e
        pixels = processor(images=pil, return_tensors="pt")["pixel_values"].to(device=device, dtype=DTYPES[dtype])
        with torch.inference_mode():
            tokens = model(pixel_values=pixels).last_hidden_state  # [1, N, D]
        return {"embedding": tokens.mean(dim=1)[0].float().tolist()}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="a local Hugging Face IJepaModel directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    args = parser.parse_args(argv)
    app = create_app(args.model_dir, args.device, args.dtype)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
