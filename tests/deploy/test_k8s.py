"""deploy/k8s/: schema-valid manifests (kubernetes-validate ships the Kubernetes JSON schemas, so
this runs offline, as kubeconform would) that agree with each other and with the service."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.helpers import K8S_DIR, load_yaml, settings_fields

MANIFESTS = ["configmap.yaml", "deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"]
# Kubernetes releases the manifests are checked against (autoscaling/v2 and policy/v1 are GA in both).
K8S_VERSIONS = ["1.29.0", "1.34.0"]


def _doc(name: str) -> dict[str, Any]:
    return load_yaml(K8S_DIR / name)


def _container() -> dict[str, Any]:
    return _doc("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_is_valid_against_the_kubernetes_schema(name: str, version: str) -> None:
    kubernetes_validate.validate(_doc(name), version, strict=True)


def test_schema_rejects_a_misspelt_probe() -> None:
    doc = copy.deepcopy(_doc("deployment.yaml"))
    probe = doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    probe["httpGett"] = probe.pop("httpGet")
    with pytest.raises(kubernetes_validate.ValidationError, match="httpGett"):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    assert sorted(_doc("kustomization.yaml")["resources"]) == sorted(MANIFESTS)
    assert sorted(p.name for p in Path(K8S_DIR).glob("*.yaml")) == sorted([*MANIFESTS, "kustomization.yaml"])


def test_probes_use_health_ready_and_a_startup_probe() -> None:
    container = _container()
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "too short for a slow model load"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(_doc("configmap.yaml")["data"]["JEPA_PORT"])


def test_termination_grace_covers_prestop_and_drain() -> None:
    pod = _doc("deployment.yaml")["spec"]["template"]["spec"]
    pre_stop = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(_doc("configmap.yaml")["data"]["JEPA_DRAIN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + drain + 5


def test_pod_runs_as_the_image_user_without_privileges() -> None:
    pod = _doc("deployment.yaml")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
    container_sc = _container()["securityContext"]
    assert container_sc["allowPrivilegeEscalation"] is False and container_sc["readOnlyRootFilesystem"] is True


def test_service_hpa_and_pdb_point_at_the_deployment() -> None:
    deployment = _doc("deployment.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _doc("service.yaml")["spec"]["selector"].items() <= labels.items()
    assert _doc("service.yaml")["spec"]["ports"][0]["targetPort"] == "http"
    assert _doc("pdb.yaml")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = _doc("hpa.yaml")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert _doc("hpa.yaml")["spec"]["minReplicas"] >= 2 > _doc("pdb.yaml")["spec"]["minAvailable"]


def test_configmap_is_what_the_deployment_reads_and_names_real_settings() -> None:
    configmap = _doc("configmap.yaml")
    refs = [e["configMapRef"]["name"] for e in _container()["envFrom"]]
    assert refs == [configmap["metadata"]["name"]]
    fields = settings_fields()
    for name in configmap["data"]:
        assert name.startswith("JEPA_") and name.removeprefix("JEPA_") in fields, name
