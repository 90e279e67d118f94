"""Python client for the service: ``JepaClient(url).embed(images) -> numpy``, sync and async (httpx).

``embeddings(images, outputs=...)`` returns every output asked for (``global``, ``patch``,
``multilayer``) as a named :class:`jepa.contract.Embeddings` of numpy arrays, the same result type
the service passes from backend to response; ``embed`` is its short form for the common cases.

Images go up as multipart files (paths and bytes as they are, PIL images and uint8 arrays as
PNG; for a video model, video files go up the same way, as paths or bytes) and results come back
as safetensors, so no float is ever printed as text. Errors raise :class:`ServiceError` with the
server's status, type, message and failing index.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from jepa.contract import OUTPUT_SPECS, OUTPUTS, Embeddings, Output

ImageLike = Any  # a path (str | Path), file bytes, a PIL.Image.Image or a uint8 [H, W, 3] array
SAFETENSORS = "application/vnd.safetensors"


class ServiceError(Exception):
    def __init__(self, status: int, type_: str, message: str, index: int | None = None) -> None:
        super().__init__(f"{status} {type_}: {message}")
        self.status, self.type, self.message, self.index = status, type_, message, index


def _file_bytes(image: ImageLike) -> bytes:
    if isinstance(image, bytes):
        return image
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    raise TypeError(f"cannot send {type(image).__name__} as an image: pass a path, bytes, PIL image or uint8 array")


def _request_args(images: Sequence[ImageLike], outputs: Sequence[Output], normalize: bool) -> dict[str, Any]:
    unknown = [o for o in outputs if o not in OUTPUTS]
    if unknown or "global" not in outputs:
        raise ValueError(f"outputs must include 'global' and be among {', '.join(OUTPUTS)}: got {list(outputs)}")
    if isinstance(images, (str, Path, bytes, np.ndarray)) or hasattr(images, "save"):
        images = [images]  # one image given on its own
    files = [("image", (f"image{i}", _file_bytes(im), "application/octet-stream")) for i, im in enumerate(images)]
    params: dict[str, Any] = {"outputs": ",".join(outputs), "normalize": str(normalize).lower()}
    return {"files": files, "params": params, "headers": {"Accept": SAFETENSORS}}


def _parse(response: httpx.Response) -> Embeddings[np.ndarray]:
    if response.status_code != 200:
        try:
            err = response.json()["error"]
            raise ServiceError(response.status_code, err["type"], err["message"], err.get("index"))
        except (ValueError, KeyError, TypeError):
            raise ServiceError(response.status_code, "http_error", response.text[:200]) from None
    from safetensors.numpy import load

    arrays = load(response.content)
    return Embeddings(**{spec.tensor: arrays.get(spec.field) for spec in OUTPUT_SPECS.values()})


def _embed_result(result: Embeddings[np.ndarray], patches: bool) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    return (result.global_embedding, result.patch_embeddings) if patches else result.global_embedding


def _outputs(patches: bool) -> tuple[Output, ...]:
    return ("global", "patch") if patches else ("global",)


class JepaClient:
    """``embed(images)`` -> ``[B, D]`` float32; with ``patches=True`` -> ``([B, D], [B, N, D])``."""

    def __init__(self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def embed(
        self, images: Sequence[ImageLike] | ImageLike, patches: bool = False, normalize: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        return _embed_result(self.embeddings(images, _outputs(patches), normalize), patches)

    def embeddings(
        self, images: Sequence[ImageLike] | ImageLike, outputs: Sequence[Output] = OUTPUTS, normalize: bool = False
    ) -> Embeddings[np.ndarray]:
        """Every output in ``outputs`` (default: all three), by name; the others are ``None``."""
        return _parse(self._http.post("/embed", **_request_args(images, outputs, normalize)))

    def info(self) -> dict[str, Any]:
        response = self._http.get("/info")
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> JepaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncJepaClient:
    """The same as :class:`JepaClient`, for asyncio code."""

    def __init__(self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout)

    async def embed(
        self, images: Sequence[ImageLike] | ImageLike, patches: bool = False, normalize: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        return _embed_result(await self.embeddings(images, _outputs(patches), normalize), patches)

    async def embeddings(
        self, images: Sequence[ImageLike] | ImageLike, outputs: Sequence[Output] = OUTPUTS, normalize: bool = False
    ) -> Embeddings[np.ndarray]:
        """Every output in ``outputs`` (default: all three), by name; the others are ``None``."""
        return _parse(await self._http.post("/embed", **_request_args(images, outputs, normalize)))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncJepaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
