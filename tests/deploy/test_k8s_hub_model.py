"""deploy/k8s/hub-model: the base Deployment with the overlay's patch applied (a strategic merge of
the fields it uses: lists of named items merge by name, volumeMounts by mountPath) is schema-valid,
and the init container, the volume and the service agree on where the model is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from jepa import catalogue
from tests.deploy.helpers import K8S_DIR, load_yaml

OVERLAY = K8S_DIR / "hub-model"
K8S_VERSIONS = ["1.29.0", "1.34.0"]
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
              "volumeMounts": "mountPath"}  # fmt: skip


def merge(base: Any, patch: Any, key: str | None = None) -> Any:
    """Kubernetes' strategic merge for dicts and keyed lists; anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v, k) if k in base else v
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        field = MERGE_KEYS[key]
        out = list(base)
        for item in patch:
            idx = next((i for i, b in enumerate(out) if b.get(field) == item.get(field)), None)
            if idx is None:
                out.append(item)
            else:
                out[idx] = merge(out[idx], item)
        return out
    return patch


def patched() -> dict[str, Any]:
    return merge(load_yaml(K8S_DIR / "deployment.yaml"), load_yaml(OVERLAY / "deployment-patch.yaml"))


def test_overlay_lists_the_base_the_claim_and_the_patch() -> None:
    kustomization = load_yaml(OVERLAY / "kustomization.yaml")
    assert kustomization["resources"] == ["../", "pvc.yaml"]
    assert [p["path"] for p in kustomization["patches"]] == ["deployment-patch.yaml"]
    assert sorted(p.name for p in Path(OVERLAY).glob("*.yaml")) == [
        "deployment-patch.yaml", "kustomization.yaml", "pvc.yaml"
    ]  # fmt: skip


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_patched_deployment_and_claim_are_valid(version: str) -> None:
    kubernetes_validate.validate(patched(), version, strict=True)
    kubernetes_validate.validate(load_yaml(OVERLAY / "pvc.yaml"), version, strict=True)


def test_init_container_fills_what_the_service_serves() -> None:
    spec = patched()["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    (service,) = spec["containers"]
    env = {e["name"]: e["value"] for e in init["env"]}
    assert catalogue.find(env["JEPA_SOURCE"]) is not None
    assert 'python -m export "$JEPA_SOURCE" --out /data/model' in init["args"][0]
    assert "test -f /data/model/model.onnx ||" in init["args"][0]  # later starts do nothing
    service_env = {e["name"]: e["value"] for e in service["env"]}
    assert service_env == {"JEPA_MODEL": "/data/model", "HF_HUB_OFFLINE": "1"}
    claim = load_yaml(OVERLAY / "pvc.yaml")["metadata"]["name"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "model-cache"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    mounts = {m["mountPath"]: m for m in service["volumeMounts"]}
    assert mounts["/data"]["readOnly"] is True and "/tmp" in mounts  # the base's mounts are kept
    assert {m["mountPath"] for m in init["volumeMounts"]} == {"/data", "/tmp"}
    assert env["HF_HOME"].startswith("/data/")
    assert service["resources"]["limits"]["cpu"] == "2"  # merged, not replaced
