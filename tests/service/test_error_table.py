"""The one status table is looked up along the class hierarchy, and /docs lists every option value."""

from __future__ import annotations

from typing import get_args

from jepa.contract import Output
from service.app import EMBED_OPENAPI
from service.errors import ApiError, InvalidImage, Overloaded, status_of
from service.schemas import EmbedOptions


def test_subclass_of_a_listed_error_keeps_its_status():
    class CorruptJpeg(InvalidImage):
        pass

    class Unlisted(ApiError):
        pass

    assert status_of(CorruptJpeg("x")) == 400 and status_of(Overloaded("x")) == 503
    assert status_of(Unlisted("x")) == 500


def test_embed_query_parameters_come_from_the_options_model():
    params = {p["name"]: p["schema"] for p in EMBED_OPENAPI["parameters"]}
    assert set(params) == set(EmbedOptions.model_fields)
    assert params["outputs"]["items"]["enum"] == list(get_args(Output)) == ["global", "patch", "multilayer"]
    assert params["encoding"]["enum"] == ["float", "base64"]
