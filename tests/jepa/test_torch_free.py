"""The ONNX Runtime service runs without torch: config, preprocessing, read_config and the artifact
contract must not import it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError

    import numpy as np
    from PIL import Image

    import jepa
    from jepa.config import ModelConfig
    from jepa.contract import GRAPH_FILES, OUTPUT_SPECS, Embeddings, read_record
    from jepa.formats import detect_format
    from jepa.formats.native import read_config
    from jepa.preprocess import normalize, prepare_image
    from jepa.video_preprocess import normalize_clips, prepare_clip, sample_indices

    config = read_config(sys.argv[1])
    assert isinstance(config, ModelConfig) and detect_format(sys.argv[1]) == "native"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    batch = normalize(prepare_image(image, config.preprocess, config.image_size)[None], config.preprocess)
    assert batch.shape == (1, 3, config.image_size, config.image_size), batch.shape
    assert read_record(sys.argv[1]) is None and "model.onnx" in GRAPH_FILES and "multilayer" in OUTPUT_SPECS
    assert Embeddings(batch).present() == {"global"}
    clip = prepare_clip([image] * 2, config.preprocess, config.image_size)[None]
    assert normalize_clips(clip, config.preprocess).shape[:2] == (1, 2) and len(sample_indices(9, 4, 2)) == 4
    try:
        jepa.load_encoder(sys.argv[1])
    except ImportError:
        print("torch-free ok")
    """
)


def test_config_preprocess_and_read_config_need_no_torch(tiny_model_dir):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_model_dir)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "torch-free ok"
