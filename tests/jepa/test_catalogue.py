"""The catalogue of published encoders: names map to entries, sizes follow from the architecture,
every figure has a source, and ``python -m jepa models`` needs no torch and is what the README quotes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

from jepa import catalogue
from jepa.config import ModelConfig, architecture_for
from jepa.vit import Encoder

REPO = Path(__file__).resolve().parents[2]


def test_names_hub_ids_and_urls_are_unique_and_find_each_entry():
    for key in ("name", "hub_id", "url"):
        values = [getattr(e, key) for e in catalogue.CATALOGUE]
        assert len(set(values)) == len(values), key
    for e in catalogue.CATALOGUE:
        assert catalogue.find(e.name) is e and catalogue.find(e.hub_id.upper()) is e and catalogue.find(e.url) is e
        assert e.url.startswith(f"https://dl.fbaipublicfiles.com/{e.family}/")
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", e.name), e.name
    assert catalogue.find("facebook/ijepa_vith14_1k@main") is None and catalogue.find("vit") is None


def test_the_issue_s_models_are_all_listed():
    names = {e.name for e in catalogue.CATALOGUE}
    assert {"ijepa-vith14-1k", "ijepa-vith16-448-1k", "ijepa-vith14-22k", "ijepa-vitg16-22k"} <= names
    assert {e.arch for e in catalogue.CATALOGUE if e.family == "vjepa2"} == {"ViT-L/16", "ViT-H/16", "ViT-g/16"}


def test_ijepa_parameter_counts_match_the_encoder_we_build():
    for e in catalogue.CATALOGUE:
        if e.family != "ijepa":
            assert e.params is None and e.params_quoted and e.params_source
            continue
        arch = architecture_for(e.size, patch_size=e.patch_size, image_size=e.resolution)
        with torch.device("meta"):
            model = Encoder(ModelConfig(architecture=arch))
        assert e.params == sum(t.numel() for t in model.state_dict().values()), e.name


def test_every_probe_figure_names_its_source():
    figures = {e.name: e.probe.top1 for e in catalogue.CATALOGUE if e.probe}
    assert figures["ijepa-vith14-1k"] == 79.3 and figures["ijepa-vith16-448-1k"] == 81.1
    for e in catalogue.CATALOGUE:
        if e.probe:
            assert e.probe.source in (catalogue.IJEPA_PAPER, catalogue.VJEPA2_README) and e.probe.metric
    assert all(e.url_sha256 is None for e in catalogue.CATALOGUE)  # none published: none invented


def test_models_command_is_torch_free_and_quoted_in_the_readme():
    code = 'import sys; sys.modules["torch"] = None\nfrom jepa.__main__ import main\nsys.exit(main(["models"]))'
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{catalogue.format_table()}\n\n{catalogue.format_sources()}"
    assert catalogue.format_table() in (REPO / "README.md").read_text()
