"""Request and response models. Limits that never change live in the types; per-server limits
(images per request) are checked by :mod:`service.inputs` with the configured value."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jepa.contract import OUTPUTS, Output


class EmbedOptions(BaseModel):
    """What to compute and how to encode it. Query parameters for multipart and raw bodies."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    outputs: tuple[Output, ...] = Field(
        ("global",),
        min_length=1,
        max_length=len(OUTPUTS),
        description='"global" (pooled [D]), "patch" ([N, D]) and/or "multilayer" (the mean tokens of the last '
        "four blocks, concatenated: [4 D]; see /info multilayer_dim).",
    )
    normalize: bool = Field(False, description="L2-normalise the global embedding.")
    encoding: Literal["float", "base64"] = Field(
        "float", description="JSON floats, or base64 of little-endian raw arrays (JSON responses only)."
    )
    dtype: Literal["float32", "float16"] = Field("float32", description="Dtype of the returned arrays.")

    @field_validator("outputs")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"outputs has duplicates: {list(value)}")
        return value

    @property
    def want_patch(self) -> bool:
        return "patch" in self.outputs


class EmbedRequest(EmbedOptions):
    """JSON body of ``POST /embed``."""

    images: list[str] = Field(
        min_length=1,
        description='Base64 image files or data URIs ("data:image/png;base64,..."); http(s) URLs only when the '
        "server enables URL fetching with an allow-list.",
    )


class EmbeddingItem(BaseModel):
    index: int
    embedding: list[float] | str | None = Field(None, description="[D] floats, or base64 (present with 'global').")
    patch_embeddings: list[list[float]] | list[list[list[list[float]]]] | str | None = Field(
        None,
        description="[N, D] floats in row-major patch order (a video model: [T', H', W', D]), or base64 "
        "(present with 'patch').",
    )
    multilayer_embedding: list[float] | str | None = Field(
        None, description="[4 D] floats, or base64 (present with 'multilayer')."
    )


class EmbedResponse(BaseModel):
    model: str
    dim: int
    grid: list[int] = Field(description="[H', W'] patches; for a video model [T', H', W'] tokens.")
    dtype: Literal["float32", "float16"]
    data: list[EmbeddingItem]


class ErrorBody(BaseModel):
    type: str
    message: str
    index: int | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
