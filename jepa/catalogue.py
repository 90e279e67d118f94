"""The published JEPA encoders, as data: short name, Hub id, Meta's original URL, and what they are.

``python -m jepa models`` prints this table; ``--model ijepa-vith14-1k`` (or the Hub id, or the
URL) names an entry. Every figure carries its source; where no source gives a figure (the
ImageNet-22k I-JEPA checkpoints have no ImageNet-1k linear probe in the paper's Table 1; V-JEPA 2
ViT-H and ViT-g at 256 have no probe in the vjepa2 README) it is ``None`` and printed as "-".

Checksums: neither facebookresearch/ijepa nor facebookresearch/vjepa2 publishes a checksum for its
checkpoint files, so ``url_sha256`` is ``None`` everywhere for now; a download then records the
sha256 it computed (in the sidecar ``.json`` and in the model's provenance) instead of checking
it. Pin one here only from a published source. Torch-free: the service's ``--model`` uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jepa.config import SIZES

Family = Literal["ijepa", "vjepa2"]

IJEPA_PAPER = "I-JEPA paper (arXiv 2301.08243), Table 1"
IJEPA_README = "facebookresearch/ijepa README, 'Pretrained models'"
VJEPA2_README = "facebookresearch/vjepa2 README, 'V-JEPA 2 Pretrained Checkpoints' / 'Evaluation Attentive Probes'"
# The Hub model cards of facebook/ijepa_* say cc-by-nc-4.0 (as does facebookresearch/ijepa's LICENSE);
# the V-JEPA 2 cards say apache-2.0 (facebookresearch/vjepa2's code is MIT).
IJEPA_LICENSE = "CC-BY-NC-4.0"
VJEPA2_LICENSE = "Apache-2.0"


@dataclass(frozen=True)
class Probe:
    """A frozen-feature probe figure from a paper or README: ``metric`` says which benchmark and probe."""

    metric: str
    top1: float
    source: str


@dataclass(frozen=True)
class Published:
    """One released encoder. ``size`` is a key of :data:`jepa.config.SIZES` (its width and depth)."""

    name: str
    family: Family
    arch: str
    size: str
    patch_size: int
    resolution: int
    data: str
    hub_id: str
    url: str
    license: str
    probe: Probe | None
    url_sha256: str | None = None
    params_source: str | None = None  # V-JEPA 2: the README's "#Parameters"; I-JEPA: computed
    params_quoted: str | None = None

    @property
    def params(self) -> int | None:
        """Encoder parameters (tensors of the state dict), computed from the I-JEPA architecture."""
        if self.family != "ijepa":
            return None
        return ijepa_encoder_params(self.size, self.patch_size, self.resolution)

    def params_text(self) -> str:
        if self.params is not None:
            return f"{self.params / 1e6:.0f}M"
        return self.params_quoted or "-"

    def weights_gb(self) -> float | None:
        """fp32 size of the encoder's weights in GB (10^9 bytes); I-JEPA only (computed)."""
        return None if self.params is None else self.params * 4 / 1e9


def ijepa_encoder_params(size: str, patch_size: int, image_size: int) -> int:
    """Tensor elements of an I-JEPA encoder's state dict: patch embedding, the fixed position
    table, ``depth`` pre-norm blocks (fused qkv with bias, MLP), final norm. The same count as
    ``jepa.vit.Encoder(...).state_dict()`` (tests/jepa/test_catalogue.py checks it)."""
    spec = SIZES[size]
    d, depth, mlp = spec["embed_dim"], spec["depth"], spec["mlp_dim"]
    patches = (image_size // patch_size) ** 2
    patch_embed = 3 * patch_size * patch_size * d + d
    block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * mlp + mlp) + (mlp * d + d)
    return patch_embed + patches * d + depth * block + 2 * d


def _ijepa(name: str, arch: str, size: str, patch: int, res: int, data: str, hub: str, file: str,
           top1: float | None) -> Published:  # fmt: skip
    probe = Probe("ImageNet-1k linear probe", top1, IJEPA_PAPER) if top1 is not None else None
    return Published(name, "ijepa", arch, size, patch, res, data, hub,
                     f"https://dl.fbaipublicfiles.com/ijepa/{file}", IJEPA_LICENSE, probe)  # fmt: skip


def _vjepa2(name: str, arch: str, size: str, res: int, hub: str, file: str, params: str,
            ssv2: float | None) -> Published:  # fmt: skip
    probe = Probe("SSv2 attentive probe", ssv2, VJEPA2_README) if ssv2 is not None else None
    return Published(name, "vjepa2", arch, size, 16, res, "video", hub,
                     f"https://dl.fbaipublicfiles.com/vjepa2/{file}", VJEPA2_LICENSE, probe,
                     params_source=VJEPA2_README, params_quoted=params)  # fmt: skip


CATALOGUE: tuple[Published, ...] = (
    _ijepa("ijepa-vith14-1k", "ViT-H/14", "huge", 14, 224, "ImageNet-1k", "facebook/ijepa_vith14_1k",
           "IN1K-vit.h.14-300e.pth.tar", 79.3),
    _ijepa("ijepa-vith16-448-1k", "ViT-H/16", "huge", 16, 448, "ImageNet-1k", "facebook/ijepa_vith16_1k",
           "IN1K-vit.h.16-448px-300e.pth.tar", 81.1),
    _ijepa("ijepa-vith14-22k", "ViT-H/14", "huge", 14, 224, "ImageNet-22k", "facebook/ijepa_vith14_22k",
           "IN22K-vit.h.14-900e.pth.tar", None),
    _ijepa("ijepa-vitg16-22k", "ViT-g/16", "giant", 16, 224, "ImageNet-22k", "facebook/ijepa_vitg16_22k",
           "IN22K-vit.g.16-600e.pth.tar", None),
    _vjepa2("vjepa2-vitl-256", "ViT-L/16", "large", 256, "facebook/vjepa2-vitl-fpc64-256", "vitl.pt", "300M", 73.7),
    _vjepa2("vjepa2-vith-256", "ViT-H/16", "huge", 256, "facebook/vjepa2-vith-fpc64-256", "vith.pt", "600M", None),
    _vjepa2("vjepa2-vitg-256", "ViT-g/16", "giant", 256, "facebook/vjepa2-vitg-fpc64-256", "vitg.pt", "1B", None),
    _vjepa2("vjepa2-vitg-384", "ViT-g/16", "giant", 384, "facebook/vjepa2-vitg-fpc64-384", "vitg-384.pt", "1B", 77.3),
)  # fmt: skip


def find(name: str) -> Published | None:
    """The entry whose short name, Hub id or original URL is ``name`` (case-insensitive), if any."""
    key = name.strip().lower()
    for entry in CATALOGUE:
        if key in (entry.name, entry.hub_id.lower(), entry.url.lower()):
            return entry
    return None


def format_table(entries: tuple[Published, ...] = CATALOGUE) -> str:
    """The catalogue as a markdown table (what ``python -m jepa models`` prints)."""
    rows = [
        "| name | family | arch | res | data | params | fp32 GB | probe top-1 | license | Hugging Face Hub id |",
        "| --- | --- | --- | ---: | --- | ---: | ---: | --- | --- | --- |",
    ]
    for e in entries:
        gb = e.weights_gb()
        probe = f"{e.probe.top1:.1f}% ({e.probe.metric})" if e.probe else "-"
        rows.append(
            f"| {e.name} | {e.family} | {e.arch} | {e.resolution} | {e.data} | {e.params_text()} "
            f"| {f'{gb:.2f}' if gb is not None else '-'} | {probe} | {e.license} | {e.hub_id} |"
        )
    return "\n".join(rows)


def format_sources(entries: tuple[Published, ...] = CATALOGUE) -> str:
    """Original URLs, pinned checksums and where each figure comes from."""
    lines = []
    for e in entries:
        pin = e.url_sha256 or "not published (recorded after download)"
        lines.append(f"{e.name}: {e.url} (sha256: {pin})")
    cited = sorted({e.probe.source for e in entries if e.probe} | {e.params_source for e in entries if e.params_source})
    lines.append("figures: " + "; ".join(cited) + "; I-JEPA params computed from the architecture")
    return "\n".join(lines)
