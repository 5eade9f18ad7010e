"""The deployment files: Dockerfiles, compose, Kubernetes manifests and their policy scan.

Fast and offline. No Docker engine and no cluster are needed: Dockerfiles are parsed,
manifests are rendered with `kubectl kustomize` and validated against Kubernetes' own JSON
schemas (kubernetes-validate), and checkov scans both. Tests that need kubectl or checkov
skip without them (`make tools` installs checkov). docs/deploy.md says what this covers.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if TYPE_CHECKING:
    from clients.harness import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "deploy" / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile", "cuda": DOCKER / "Dockerfile.cuda"}
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = ["base", "overlays/cpu", "overlays/gpu", "training"]
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# What the serving process must never need (docs/architecture.md): training libraries.
TRAINING_ONLY = {"torch", "scikit-learn", "skl2onnx", "onnx", "onnxscript", "skops", "scipy"}


# ---------------------------------------------------------------------------------------
# Dockerfiles: a small parser over instructions (continuations, comments, stages).


@dataclass
class Instruction:
    keyword: str
    arguments: str

    def words(self) -> list[str]:
        """The arguments as a list: JSON (exec) form or shell words, flags included."""
        text = self.arguments.strip()
        if text.startswith("["):
            return [str(word) for word in json.loads(text)]
        return shlex.split(text)


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(path: Path) -> list[Stage]:
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    stages: list[Stage] = []
    for line in lines:
        keyword, _, arguments = line.partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            words = instruction.words()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, words[0]))
        elif instruction.keyword == "ARG" and not stages:
            continue  # global ARGs before the first FROM
        else:
            assert stages, f"{path}: {line!r} before FROM"
            stages[-1].instructions.append(instruction)
    return stages


def stage_map(path: Path) -> dict[str, Stage]:
    return {stage.name: stage for stage in parse_dockerfile(path)}


def lineage(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    chain = []
    while name in stages:
        chain.append(stages[name])
        name = stages[name].base
    return chain


def contributing(stages: dict[str, Stage], name: str) -> list[Stage]:
    """Every stage whose work ends up in `name`: its lineage and what it COPYs --from."""
    seen: dict[str, Stage] = {}
    todo = [name]
    while todo:
        for stage in lineage(stages, todo.pop()):
            if stage.name in seen:
                continue
            seen[stage.name] = stage
            for copy in stage.all("COPY"):
                for word in copy.words():
                    if word.startswith("--from="):
                        todo.append(word.removeprefix("--from="))
    return list(seen.values())


def effective(stages: dict[str, Stage], name: str, keyword: str) -> Instruction | None:
    """The last `keyword` instruction in force in stage `name` (inherited through FROM)."""
    for stage in lineage(stages, name):
        found = stage.all(keyword)
        if found:
            return found[-1]
    return None


def installed_extras(stage: Stage) -> list[set[str]]:
    """The extras of each `pip install ".[...]"` of the project in a stage."""
    extras = []
    for run in stage.all("RUN"):
        if "pip install" not in run.arguments:
            continue
        for match in re.finditer(r"""["']?\.(?:\[([^\]]*)\])?["']?(?=\s|$)""", run.arguments):
            extras.append({e.strip() for e in (match.group(1) or "").split(",") if e.strip()})
    return extras


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_copy_sources_exist(flavour: str) -> None:
    stages = parse_dockerfile(DOCKERFILES[flavour])
    names = {stage.name for stage in stages}
    for stage in stages:
        for copy in stage.all("COPY") + stage.all("ADD"):
            words = copy.words()
            if any(word.startswith("--from=") for word in words):
                source = next(w for w in words if w.startswith("--from=")).split("=", 1)[1]
                assert source in names, f"{flavour}: COPY --from={source}: no such stage"
                continue
            sources = [w for w in words if not w.startswith("--")][:-1]
            assert sources, f"{flavour}: {copy}"
            for source in sources:
                assert (ROOT / source).exists(), f"{flavour}: COPY source {source} is missing"


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_final_stages_are_non_root_with_a_grpc_healthcheck(flavour: str) -> None:
    stages = stage_map(DOCKERFILES[flavour])
    ordered = parse_dockerfile(DOCKERFILES[flavour])
    # The default target (the last stage) is `train`: a plain build serves AND trains.
    assert ordered[-1].name == "train"
    scripts = PYPROJECT["project"]["scripts"]
    for target in ("serve", "train"):
        assert target in stages, f"{flavour}: no `{target}` target"
        user = effective(stages, target, "USER")
        assert user is not None, f"{flavour}/{target}: runs as root (no USER)"
        name = user.arguments.split(":")[0]
        assert name not in ("root", "0"), f"{flavour}/{target}: USER {user.arguments}"
        assert name == "10001", f"{flavour}/{target}: expected uid 10001"
        healthcheck = effective(stages, target, "HEALTHCHECK")
        assert healthcheck is not None, f"{flavour}/{target}: no HEALTHCHECK"
        command = healthcheck.arguments.split("CMD", 1)[1].strip()
        words = json.loads(command) if command.startswith("[") else shlex.split(command)
        assert words[:3] == ["python", "-m", "service.healthcheck"], words
        entry = effective(stages, target, "ENTRYPOINT") or effective(stages, target, "CMD")
        assert entry is not None, f"{flavour}/{target}: no CMD"
        assert entry.arguments.startswith("["), f"{flavour}/{target}: use the exec form"
        assert entry.words()[0] in scripts, f"{entry.words()[0]} is no console script"


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_serve_target_installs_no_train_extra(flavour: str) -> None:
    stages = stage_map(DOCKERFILES[flavour])
    serve = [extras for s in contributing(stages, "serve") for extras in installed_extras(s)]
    train = [extras for s in contributing(stages, "train") for extras in installed_extras(s)]
    assert serve, f"{flavour}: the serve target installs the project nowhere"
    assert all("train" not in extras for extras in serve), serve
    assert {"postgres", "s3"} <= set().union(*serve), serve
    assert any("train" in extras for extras in train), train


def test_cuda_image_is_on_an_nvidia_cuda_runtime_base_that_onnxruntime_matches() -> None:
    stages = parse_dockerfile(DOCKERFILES["cuda"])
    names = {stage.name for stage in stages}
    bases = [stage.base for stage in stages if stage.base not in names]
    assert bases, "no external base image"
    pattern = re.compile(r"^nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu\d+\.\d+$")
    for base in bases:
        assert pattern.match(base), f"{base} is not an nvidia/cuda cuDNN runtime image"
    # The CUDA major must be the one the pinned onnxruntime-gpu wheel was built for.
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:
        pytest.skip("onnxruntime-gpu is not installed here")
    built_for = str(getattr(info, "cuda_version", "") or "")
    if not built_for:
        pytest.skip("this onnxruntime build names no CUDA version")
    for base in bases:
        match = pattern.match(base)
        assert match is not None
        assert match.group(1) == built_for.split(".")[0], f"{base}: onnxruntime needs {built_for}"


def test_dockerignore_keeps_the_context_small() -> None:
    entries = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "var", ".git"} <= entries
    # ... but not what the images COPY.
    for path in DOCKERFILES.values():
        for stage in parse_dockerfile(path):
            for copy in stage.all("COPY"):
                words = [w for w in copy.words() if not w.startswith("--")]
                if any(w.startswith("--from=") for w in copy.words()):
                    continue
                for source in words[:-1]:
                    assert source.rstrip("/") not in entries, f"{source} is ignored"


def test_compose_shares_one_registry_between_two_replicas() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "paradigm-1", "paradigm-2", "prometheus", "grafana"} <= set(services)
    replicas = [services["paradigm-1"], services["paradigm-2"]]
    for replica in replicas:
        build = replica["build"]
        assert (ROOT / "deploy" / build["context"] / build["dockerfile"]).is_file()
        assert build.get("target", "train") in stage_map(DOCKERFILES["cpu"])
        environment = replica["environment"]
        assert environment["PARADIGM_REGISTRY_URL"].startswith("postgresql://")
        assert "postgres" in replica["depends_on"]
    artifacts = {replica["environment"]["PARADIGM_ARTIFACTS_URL"] for replica in replicas}
    assert len(artifacts) == 1, "the replicas must share one artifact store"
    mounts = [{v.split(":")[0] for v in replica["volumes"]} for replica in replicas]
    assert mounts[0] & mounts[1], "the replicas share no volume for model files"
    prometheus = yaml.safe_load((ROOT / "deploy" / "compose" / "prometheus.yml").read_text())
    targets = {
        t
        for job in prometheus["scrape_configs"]
        for s in job["static_configs"]
        for t in s["targets"]
    }
    assert {"paradigm-1:8002", "paradigm-2:8002"} <= targets


# ---------------------------------------------------------------------------------------
# A serve-only install has no torch.


def requirement_closure(name: str, extras: set[str]) -> tuple[set[str], set[str]]:
    """Installed distributions that `name[extras]` needs, walked through Requires-Dist with
    markers and extras evaluated; and the names required but not installed here."""
    needed: set[str] = set()
    missing: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [(name, frozenset(extras))]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        current, current_extras = todo.pop()
        key = (canonicalize_name(current), current_extras)
        if key in done:
            continue
        done.add(key)
        try:
            distribution = metadata.distribution(current)
        except metadata.PackageNotFoundError:
            missing.add(canonicalize_name(current))
            continue
        needed.add(canonicalize_name(current))
        for line in distribution.requires or []:
            requirement = Requirement(line)
            marker = requirement.marker
            environments = [{"extra": extra} for extra in current_extras] or [{"extra": ""}]
            if marker is not None and not any(marker.evaluate(env) for env in environments):
                continue
            todo.append((requirement.name, frozenset(requirement.extras)))
    return needed, missing


def test_serve_only_install_needs_no_training_library() -> None:
    try:
        metadata.distribution("paradigm")
    except metadata.PackageNotFoundError:
        pytest.skip("paradigm is not installed in this environment (pip install -e .)")
    needed, missing = requirement_closure("paradigm", {"postgres", "s3"})
    assert {"grpcio", "onnxruntime-gpu", "psycopg", "boto3"} <= needed, sorted(needed)
    assert not (needed | missing) & TRAINING_ONLY, sorted((needed | missing) & TRAINING_ONLY)
    # The `train` extra is where they are: the walk does see them when asked.
    with_train, _ = requirement_closure("paradigm", {"train"})
    assert {"torch", "scikit-learn"} <= with_train


BLOCKER = '''
import sys

BLOCKED = {blocked!r}


class _ServeOnly:
    """Makes the training libraries unimportable, as in the serve image."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{{name}}: not installed in a serve-only image")
        return None


sys.meta_path.insert(0, _ServeOnly())
'''


@pytest.fixture
def serve_only_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python processes (and their spawned workers) import no torch."""
    site = tmp_path / "serve-only-site"
    site.mkdir()
    blocked = sorted({"torch", "sklearn", "skl2onnx", "onnx", "onnxscript", "skops", "scipy"})
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=blocked))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), str(ROOT), env.get("PYTHONPATH")]))
    for name in [n for n in env if n.startswith("PARADIGM_")]:
        del env[name]
    probe = subprocess.run(
        [sys.executable, "-c", "import torch"], env=env, capture_output=True, timeout=60
    )
    assert probe.returncode != 0, "the import blocker does not work"
    return env


def healthcheck(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.healthcheck", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def serve_only_server(serve_only_env: dict[str, str], tmp_path: Path) -> Iterator[ServerProcess]:
    from clients.harness import paradigm_server

    # An empty data directory, as a serving replica's emptyDir: the built-in datasets
    # (written by scikit-learn) are skipped with a warning, not a failed start. The
    # environment is serve_only_env alone, so no PARADIGM_* setting of this process leaks in.
    with paradigm_server(
        tmp_path,
        "serve-only",
        tmp_path / "empty",
        metrics=False,
        command=[sys.executable, "-m", "service.cli"],
        base_env=serve_only_env,
        timeout=60,
    ) as server:
        yield server


def test_serve_only_server_answers_health_serving(
    serve_only_server: ServerProcess, serve_only_env: dict[str, str]
) -> None:
    result = healthcheck(serve_only_env, "--port", str(serve_only_server.port))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    # PARADIGM_PORT is the default port, as in the images.
    result = healthcheck({**serve_only_env, "PARADIGM_PORT": str(serve_only_server.port)})
    assert result.returncode == 0, result.stderr
    unknown = healthcheck(serve_only_env, "--port", str(serve_only_server.port), "--service", "x")
    assert unknown.returncode == 1
    assert len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr


def test_serve_only_server_refuses_training_with_a_clear_status(
    serve_only_server: ServerProcess,
) -> None:
    import grpc

    from clients.client import ParadigmClient, ParadigmClientError

    with ParadigmClient(serve_only_server.target) as client:
        for algorithm in ("logistic_regression", "mlp"):
            with pytest.raises(ParadigmClientError) as caught:
                client.start_training("iris", algorithm)
            assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "cannot train" in caught.value.details
            assert "train extra" in caught.value.details
        with pytest.raises(ParadigmClientError) as caught:
            client.explain("iris-lr")
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert not client.list_jobs(), "nothing may be queued"


def test_healthcheck_fails_with_one_line_when_nothing_listens(
    serve_only_env: dict[str, str],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = healthcheck(serve_only_env, "--port", str(port), "--timeout", "2")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "UNAVAILABLE" in lines[0], result.stderr


# ---------------------------------------------------------------------------------------
# Kubernetes: rendered with kubectl's kustomize, validated with Kubernetes' schemas.


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: it renders deploy/k8s (kubectl kustomize)")
    out = {}
    for name in KUSTOMIZATIONS:
        result = subprocess.run(
            [kubectl, "kustomize", str(K8S / name)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"kustomize {name}: {result.stderr}"
        out[name] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def test_every_manifest_is_valid_kubernetes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    import kubernetes_validate

    version = kubernetes_validate.utils.latest_version()
    for name, docs in rendered.items():
        for doc in docs:
            if doc["kind"] == "ServiceMonitor":
                # A Prometheus Operator CRD: kubernetes-validate ships only the built-in kinds
                # and raises SchemaNotFoundError for it (it does not pass it silently). Only
                # this kind is exempt; its structure is checked in the ServiceMonitor test.
                with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                    kubernetes_validate.validate(doc, version, strict=True)
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = ".".join(str(p) for p in error.path)
                pytest.fail(
                    f"{name}: {doc['kind']}/{doc['metadata']['name']}: {where}: {error.message}"
                )


@pytest.mark.parametrize("overlay", ["base", "overlays/cpu", "overlays/gpu"])
def test_deployments_probe_grpc_and_run_locked_down(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    deployments = of_kind(rendered[overlay], "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {"paradigm", "paradigm-trainer"}
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in containers(deployment):
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert container[probe]["grpc"] == {"port": 8001}, (probe, container[probe])
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert {"/data", "/tmp"} <= mounts
            limits = container["resources"]["limits"]
            assert {"cpu", "memory"} <= set(limits)
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert container["image"].split(":")[-1] not in ("", "latest")
    serve = named(rendered[overlay], "Deployment", "paradigm")
    trainer = named(rendered[overlay], "Deployment", "paradigm-trainer")
    assert "/paradigm-serve:" in containers(serve)[0]["image"]
    assert "/paradigm-train:" in containers(trainer)[0]["image"]


def test_gpu_overlay_requests_gpus_and_uses_the_cuda_images(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["overlays/gpu"]
    for deployment in of_kind(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        for container in containers(deployment):
            assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
            assert container["image"].endswith("-cuda"), container["image"]
    (config,) = of_kind(docs, "ConfigMap")
    assert config["data"]["PARADIGM_DEVICE"] == "cuda"
    for cpu in ("base", "overlays/cpu"):
        for deployment in of_kind(rendered[cpu], "Deployment"):
            for container in containers(deployment):
                assert "nvidia.com/gpu" not in json.dumps(container["resources"])
                assert not container["image"].endswith("-cuda")


@pytest.mark.parametrize("overlay", ["base", "overlays/cpu", "overlays/gpu"])
def test_service_hpa_pdb_servicemonitor_and_config(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    service = named(docs, "Service", "paradigm")
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"grpc": 8001, "metrics": 8002}
    serve = named(docs, "Deployment", "paradigm")
    labels = serve["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()

    hpa = named(docs, "HorizontalPodAutoscaler", "paradigm")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "paradigm"
    }  # fmt: skip
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert "replicas" not in serve["spec"], "the HPA owns the replica count"

    pdb = named(docs, "PodDisruptionBudget", "paradigm")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()

    monitor = named(docs, "ServiceMonitor", "paradigm")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selected = [
        s for s in of_kind(docs, "Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]  # fmt: skip
    assert service in selected
    for endpoint in monitor["spec"]["endpoints"]:
        for s in selected:
            assert endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}

    (config,) = of_kind(docs, "ConfigMap")
    data = config["data"]
    assert data["PARADIGM_REGISTRY_URL"].startswith("postgresql://")
    assert data["PARADIGM_ARTIFACTS_URL"] == "s3://paradigm-models/models"
    assert data["PARADIGM_S3_ENDPOINT_URL"]
    assert float(data["PARADIGM_REGISTRY_POLL_SECONDS"]) > 0
    for deployment in of_kind(docs, "Deployment"):
        (container,) = containers(deployment)
        refs = {r.get("configMapRef", {}).get("name") for r in container["envFrom"]}
        assert config["metadata"]["name"] in refs


def secret_references(workload: dict[str, Any]) -> dict[str, set[str]]:
    """Secret name -> keys (or "*" for a whole secretRef) a workload uses."""
    refs: dict[str, set[str]] = {}
    pod = workload["spec"]["template"]["spec"]
    for container in pod["containers"]:
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                refs.setdefault(source["secretRef"]["name"], set()).add("*")
        for variable in container.get("env", []):
            key = variable.get("valueFrom", {}).get("secretKeyRef")
            if key:
                refs.setdefault(key["name"], set()).add(key["key"])
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            keys = {item["key"] for item in volume["secret"].get("items", [])} or {"*"}
            refs.setdefault(volume["secret"]["secretName"], set()).update(keys)
    return refs


def test_secrets_are_referenced_never_committed(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for name, docs in rendered.items():
        assert not of_kind(docs, "Secret"), f"{name} renders a Secret: create them by hand"
        for config in of_kind(docs, "ConfigMap"):
            for key, value in config["data"].items():
                assert not re.search(r"(PASSWORD|SECRET|TOKEN)S?$", key), key
                # No password in a URL's user info (postgresql://user:password@host).
                assert not re.search(r"://[^/@:]+:[^/@]+@", value), f"{key}={value}"
    for overlay in ("base", "overlays/gpu"):
        for deployment in of_kind(rendered[overlay], "Deployment"):
            refs = secret_references(deployment)
            assert refs == {"paradigm-auth": {"tokens"}, "paradigm-db": {"password"},
                            "paradigm-s3": {"*"}}, refs  # fmt: skip
            (container,) = containers(deployment)
            env = {v["name"]: v for v in container["env"]}
            assert "PGPASSWORD" in env
    # Nothing that looks like a real credential anywhere under deploy/.
    looks_real = re.compile(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----")
    for path in (ROOT / "deploy").rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".yml", ".env", ".json", ""}:
            assert not looks_real.search(path.read_text(errors="replace")), path


def test_training_job_runs_torchrun_across_two_gpu_nodes(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["training"]
    (job,) = of_kind(docs, "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] == 2
    pod = spec["template"]["spec"]
    (headless,) = [s for s in of_kind(docs, "Service") if s["spec"].get("clusterIP") == "None"]
    assert pod["subdomain"] == headless["metadata"]["name"]
    assert headless["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    command = [*container.get("command", []), *container.get("args", [])]
    rank0 = f"{job['metadata']['name']}-0.{headless['metadata']['name']}:29400"
    assert command[:6] == [
        "torchrun", "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
        f"--rdzv-endpoint={rank0}", "--rdzv-id=$(JOB_ID)",
    ]  # fmt: skip
    assert command[6:] == [
        "-m", "service.worker.standalone", "--dataset", "digits", "--algorithm", "cnn",
        "--model-name", "digits-cnn-ddp", "--device", "cuda",
    ]  # fmt: skip
    env = {v["name"]: v for v in container["env"]}
    assert "JOB_ID" in env
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert "/paradigm-train:" in container["image"] and container["image"].endswith("-cuda")
    assert 29400 in {p["port"] for p in headless["spec"]["ports"]}
    # The same config and secrets as the replicas: rank 0 publishes into their registry.
    (config,) = of_kind(docs, "ConfigMap")
    (base_config,) = of_kind(rendered["base"], "ConfigMap")
    assert config == base_config
    refs = secret_references(job)
    assert refs["paradigm-db"] == {"password"} and "paradigm-s3" in refs
    assert {r.get("configMapRef", {}).get("name") for r in container["envFrom"]} >= {
        config["metadata"]["name"]
    }


# ---------------------------------------------------------------------------------------
# checkov over the rendered manifests and the Dockerfiles.


def run_checkov(tmp_path: Path, framework: str, *targets: str) -> dict[str, Any]:
    if not CHECKOV.exists():
        pytest.skip("checkov is not installed: run make tools")
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", LOG_LEVEL="ERROR")
    result = subprocess.run(
        [str(CHECKOV), "--framework", framework, "--skip-download", "--compact",
         "--output", "json", *targets],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    (found,) = [r for r in reports if r.get("check_type") == framework]
    return dict(found)


def accepted_in_docs() -> set[str]:
    """Check ids in the "Policy scan" table of docs/deploy.md."""
    text = DEPLOY_DOC.read_text()
    section = text.split("## Policy scan", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\|\s*`?(CKV2?_[A-Z0-9]+_\d+)`?\s*\|", section, re.MULTILINE))


def assert_clean(report: dict[str, Any]) -> None:
    summary = report["summary"]
    failed = report["results"].get("failed_checks", [])
    assert summary["failed"] == 0, [(c["check_id"], c["resource"]) for c in failed]
    assert summary["parsing_errors"] == 0, report["results"].get("parsing_errors")
    documented = accepted_in_docs()
    for check in report["results"].get("skipped_checks", []):
        reason = (check.get("check_result") or {}).get("suppress_comment", "").strip()
        assert len(reason) > 20, f"{check['check_id']} on {check['resource']}: no reason"
        assert check["check_id"] in documented, f"{check['check_id']} missing in docs/deploy.md"


def test_checkov_passes_on_the_rendered_manifests(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    for name, docs in rendered.items():
        path = manifests / (name.replace("/", "-") + ".yaml")
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    report = run_checkov(tmp_path, "kubernetes", "--directory", str(manifests))
    assert report["summary"]["passed"] > 100
    assert_clean(report)


def test_checkov_passes_on_the_dockerfiles(tmp_path: Path) -> None:
    files = [arg for path in DOCKERFILES.values() for arg in ("--file", str(path))]
    report = run_checkov(tmp_path, "dockerfile", *files)
    assert report["summary"]["resource_count"] == len(DOCKERFILES)
    assert_clean(report)
