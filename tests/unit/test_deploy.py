"""What deploys sendgate, checked without Docker or a cluster (kubeconform and promtool check the rest
in .ci/check-deploy): the image's constraints pin every runtime dependency within pyproject.toml's
range, the Dockerfile installs them in a layer of their own, the build context leaves secrets and
venvs out, and the Kubernetes manifests hold what the production checklist promises."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "docker" / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"docker/constraints.txt: {line!r} is not pinned with =="
            found[canonicalize_name(name)] = version
    return found


def test_every_runtime_dependency_is_pinned_within_its_range():
    pinned = pins()
    for spec in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"docker/constraints.txt has no pin for {requirement.name}"
        assert requirement.specifier.contains(pinned[name]), (spec, pinned[name])


def test_the_dockerfile_installs_the_dependencies_before_the_code():
    lines = [line for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines() if line and line[0] != "#"]
    deps = lines.index("RUN pip install --no-cache-dir -r /tmp/constraints.txt")
    code = next(i for i, line in enumerate(lines) if line.startswith("COPY models"))
    assert lines[deps - 1] == "COPY docker/constraints.txt /tmp/constraints.txt" and deps < code


def test_the_build_context_leaves_out_venvs_stores_and_secrets():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var", "docker/keyring.toml", "**/*.pem"} <= ignored


def manifests() -> dict[tuple[str, str], dict]:
    """(kind, name) -> the manifest, of every file of deploy/k8s but the kustomization."""
    docs = {}
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] != "Kustomization":
                docs[doc["kind"], doc["metadata"]["name"]] = doc
    return docs


def test_the_statefulset_runs_workers_as_the_checklist_says():
    k8s = manifests()
    sts = k8s["StatefulSet", "sendgate-worker"]
    pod = sts["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    env = {e["name"]: e for e in worker["env"]}
    assert env["SENDGATE_WEB_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["SENDGATE_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["SENDGATE_WEB_BIND"]["value"] == "0.0.0.0" and env["SENDGATE_REPLICATION_FACTOR"]["value"] == "3"
    assert env["SENDGATE_USERKEY_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "sendgate-secrets"
    assert env["SENDGATE_OPERATOR_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "sendgate-secrets"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["terminationGracePeriodSeconds"] >= 30
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env["SENDGATE_DATA_DIR"]["value"]
    assert k8s["Service", sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"  # headless


def test_the_policy_in_the_configmap_is_a_policy_sendgate_accepts():
    from sendgate.models.policy import Policy

    text = manifests()["ConfigMap", "sendgate-policy"]["data"]["policy.toml"]
    flat = {k: v for table in tomllib.loads(text).values() for k, v in table.items()}
    Policy.from_mapping(flat)


def test_kustomization_lists_every_manifest():
    listed = set(yaml.safe_load((ROOT / "deploy" / "k8s" / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in (ROOT / "deploy" / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_ci_runs_the_deploy_checks():
    run = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\.ci/check-deploy$", run, re.M)


def test_the_keyring_is_readable_by_the_user_each_pod_runs_as():
    # a Secret's files are root's with the pod's fsGroup: a non-root process reads them through the group bit
    for (kind, name), doc in manifests().items():
        if kind not in ("StatefulSet", "Deployment"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] != 0 and pod["securityContext"]["fsGroup"] == 65534, name
        for volume in pod["volumes"]:
            for item in volume.get("secret", {}).get("items", []):
                assert item["mode"] & 0o040, (name, item)
