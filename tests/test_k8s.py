"""deploy/k8s: every manifest valid against a named Kubernetes version (kubernetes-validate
--strict, pinned in requirements-test.txt, offline with its bundled schemas), and the relations
between the manifests, the image and the app asserted."""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service import create_app, keys

from servers import ROOT, dockerfile_cmd

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33.0"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
MiB = 1024 * 1024


def validator() -> str:
    found = shutil.which("kubernetes-validate", path=os.path.dirname(sys.executable))
    assert found, "kubernetes-validate is pinned in requirements-test.txt"
    return found


def validate(*paths: Path):
    return subprocess.run([validator(), "--strict", "-k", KUBERNETES_VERSION, *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def docs() -> dict:
    """{kind: the one manifest of that kind}."""
    found = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] not in found, f"two {doc['kind']} manifests"
            found[doc["kind"]] = doc
    return found


@pytest.fixture(scope="module")
def pod(docs) -> dict:
    return docs["Deployment"]["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (only,) = pod["containers"]
    return only


@pytest.fixture(scope="module")
def env(container) -> dict:
    return {e["name"]: e["value"] for e in container["env"]}


def dockerfile_env() -> dict:
    text = (ROOT / "Dockerfile").read_text()
    runtime = text.split("\nFROM ")[-1]              # the last stage is the image
    found = {}
    for block in re.findall(r"^ENV ((?:.*\\\n)*.*)$", runtime, re.M):
        for name, value in re.findall(r"(\w+)=(\S+)", block.replace("\\\n", " ")):
            found[name] = value
    return found


def quantity(value) -> float:
    """A Kubernetes quantity: cores for cpu ("2", "500m"), bytes for memory ("768Mi")."""
    value = str(value)
    units = {"m": 1e-3, "Ki": 1024, "Mi": MiB, "Gi": 1024 * MiB, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|)", value).groups()
    return float(number) * units[unit]


# --- the manifests are valid -------------------------------------------------------------------

def test_every_manifest_is_valid_against_the_named_kubernetes_version():
    assert {p.name for p in MANIFESTS} >= {"deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml",
                                           "secret.yaml", "networkpolicy.yaml"}
    run = validate(*MANIFESTS)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count(" passed ") == len(MANIFESTS), run.stdout
    assert "WARN" not in run.stdout + run.stderr and f"against version {KUBERNETES_VERSION[:4]}" in run.stdout


def test_the_validator_rejects_an_unknown_field_and_a_wrong_type(tmp_path):
    text = (K8S / "deployment.yaml").read_text()
    (tmp_path / "extra.yaml").write_text(text.replace("revisionHistoryLimit: 5", "revisionHistoryLimit: 5\n  replicaz: 3"))
    (tmp_path / "type.yaml").write_text(text.replace("failureThreshold: 6", 'failureThreshold: "6"'))
    for bad in ("extra.yaml", "type.yaml"):
        run = validate(tmp_path / bad)
        assert run.returncode != 0 and "did not validate" in run.stdout + run.stderr, bad


def test_kustomization_lists_every_manifest_and_the_image(docs, container):
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS)
    image, tag = container["image"].split(":")
    assert [i["name"] for i in kustomization["images"]] == [image]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["api"]["image"] == container["image"]   # the image compose builds


def test_readme_says_how_to_deploy_and_how_it_scales():
    readme = (ROOT / "README.md").read_text()
    assert "kubectl apply -k deploy/k8s" in readme
    assert "stateless" in readme.lower()


# --- the Deployment and the image ----------------------------------------------------------------

def test_the_pod_runs_the_images_command_on_its_port(container, env):
    assert container["command"] == dockerfile_cmd()
    assert "args" not in container
    (port,) = container["ports"]
    assert port["name"] == "http" and port["containerPort"] == int(env["PORT"])
    assert env["HOST"] == "0.0.0.0"


def test_probe_paths_are_routes_of_the_app(container):
    app = create_app({"TESTING": True})
    routes = {r.rule for r in app.url_map.iter_rules() if "GET" in r.methods}
    probes = {name: container[name]["httpGet"] for name in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    client = app.test_client()
    for name, probe in probes.items():
        assert probe["path"] in routes, name
        assert probe["port"] in (container["ports"][0]["name"], container["ports"][0]["containerPort"])
        assert client.get(probe["path"]).status_code == 200, name


def gunicorn_settings(monkeypatch, tmp_path, env: dict) -> dict:
    """gunicorn.conf.py evaluated with the Deployment's environment."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return runpy.run_path(str(ROOT / "service" / "gunicorn.conf.py"))


def test_grace_periods_leave_room_for_the_pause_and_the_drain(pod, container, env, monkeypatch, tmp_path):
    gunicorn = gunicorn_settings(monkeypatch, tmp_path, env)
    assert gunicorn["workers"] == int(env["WEB_CONCURRENCY"])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    pause = float(pre_stop[1])
    assert pause >= 2, "long enough for the endpoint removal to reach every node"
    # the kubelet's grace period counts from the start of preStop
    assert pod["terminationGracePeriodSeconds"] > pause + gunicorn["graceful_timeout"]
    live = container["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= gunicorn["timeout"], \
        "busy sync workers must not get a pod restarted before gunicorn's own timeout acts"
    start = container["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 30, "a cold numba cache compiles ~20 s"


def test_resources_match_web_concurrency(container, env):
    workers = int(env["WEB_CONCURRENCY"])
    requests_, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert quantity(requests_["cpu"]) == quantity(limits["cpu"]) == workers   # one core per worker
    processes = workers + 1                                                    # and the master
    assert quantity(requests_["memory"]) == 256 * MiB * processes
    assert quantity(limits["memory"]) == 512 * MiB * processes
    assert quantity(requests_["ephemeral-storage"]) <= quantity(limits["ephemeral-storage"])


def test_non_root_with_a_read_only_root_and_writable_tmp_and_numba_cache(pod, container, env):
    uid = re.findall(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(), re.M)[-1]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid) != 0
    assert pod["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    empty_dirs = {path for path, name in mounts.items() if "emptyDir" in volumes[name]}
    assert "/tmp" in empty_dirs                      # the metrics directory (tempfile.mkdtemp)
    numba = env.get("NUMBA_CACHE_DIR") or dockerfile_env()["NUMBA_CACHE_DIR"]
    assert any(numba.startswith(d.rstrip("/") + "/") for d in empty_dirs), numba
    # gunicorn.conf.py seeds the cache only into a directory that does not exist yet: a volume
    # mounted at NUMBA_CACHE_DIR itself would mean compiling for ~20 s at every start
    assert numba not in mounts
    assert "PROMETHEUS_MULTIPROC_DIR" not in env or any(
        env["PROMETHEUS_MULTIPROC_DIR"].startswith(d) for d in empty_dirs)


def test_the_keys_secret_is_mounted_where_rnn_api_keys_file_points(docs, pod, container, env, tmp_path):
    path = env["RNN_API_KEYS_FILE"]
    directory, name = posixpath.split(path)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directory)
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    secret = docs["Secret"]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    items = {i["path"]: i["key"] for i in volume["secret"]["items"]}
    content = secret["stringData"][items[name]]
    # group-readable for fsGroup, the pod's group
    assert volume["secret"]["defaultMode"] & 0o040 and pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    # the example is a keys file the service accepts, holding digests only
    (tmp_path / name).write_text(content)
    loaded = keys.load(tmp_path / name)
    assert loaded and all(set(entry) == {"name", "sha256", "scopes"} for entry in json.loads(content))
    guessable = {hashlib.sha256(s.encode()).digest() for s in ("", "example", "changeme", "secret", "key",
                                                                *(k.name for k in loaded))}
    assert not guessable & {k.digest for k in loaded}
    app = create_app({"TESTING": True, "API_KEYS_FILE": str(tmp_path / name)})
    assert app.config["API_KEYS"] == tuple(k.name for k in loaded)


# --- Service, HPA, PDB, NetworkPolicy --------------------------------------------------------------

def matches(selector: dict, labels: dict) -> bool:
    return selector and all(labels.get(k) == v for k, v in selector.items())


def test_selectors_all_pick_the_deployments_pods(docs):
    deployment = docs["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], labels)
    assert matches(docs["Service"]["spec"]["selector"], labels)
    assert matches(docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], labels)
    assert matches(docs["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"], labels)
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert matches(spread["labelSelector"]["matchLabels"], labels)


def test_service_and_network_policy_reach_the_container_port(docs, container):
    port = container["ports"][0]
    (service_port,) = docs["Service"]["spec"]["ports"]
    assert service_port["targetPort"] in (port["name"], port["containerPort"])
    policy = docs["NetworkPolicy"]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == [port["containerPort"]]
    assert policy["egress"] == []                     # the service calls nothing


def test_the_autoscaler_owns_the_replicas_and_the_budget_allows_drains(docs):
    deployment, hpa, pdb = docs["Deployment"], docs["HorizontalPodAutoscaler"], docs["PodDisruptionBudget"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"], "a fixed count would reset the autoscaler's on apply"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and 0 < metric["resource"]["target"]["averageUtilization"] < 100
    low, high = hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
    assert 2 <= low < high
    unavailable = pdb["spec"]["maxUnavailable"]
    assert 1 <= unavailable < low, "a drain can proceed, and never takes every pod"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
