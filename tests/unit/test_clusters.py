"""Cluster definitions: the launcher YAML against Ray's own schema, KubeRay manifests' structure,
and the Serve config file against Serve's schema; every job and config they name exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from ddn_ray import config

ROOT = Path(__file__).resolve().parents[2]
CLUSTERS = ROOT / "clusters"
KUBERAY = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((CLUSTERS / "kuberay").glob("*.yaml"))}


def _image_tags() -> set[str]:
    text = (CLUSTERS / "Dockerfile").read_text()
    assert re.search(r"^ARG RAY_IMAGE=rayproject/ray:2\.60\.0-py311-cpu$", text, re.MULTILINE)
    return set(re.findall(r"-t (\S+) \.", text))


def test_launcher_yaml_passes_rays_schema() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((CLUSTERS / "aws.yaml").read_text())
    validate_config(raw)  # jsonschema of ray/autoscaler/ray-schema.json, as `ray up` does
    validate_config(prepare_config(raw))  # and after Ray merges the provider's defaults
    types = raw["available_node_types"]
    assert types[raw["head_node_type"]]["resources"]["CPU"] == 0
    assert any(t["resources"].get("GPU") for t in types.values()), "GPU workers for Train"
    images = {raw["docker"]["image"]} | {t.get("docker", {}).get("worker_image") for t in types.values()} - {None}
    assert images <= _image_tags()
    for cmd in raw["head_start_ray_commands"] + raw["worker_start_ray_commands"]:
        assert "RAY_AUTH_MODE=token" in cmd
    head = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head  # reached through `ray dashboard` (SSH), never public


def test_launcher_schema_rejects_a_typo() -> None:
    import jsonschema
    from ray.autoscaler._private.util import validate_config

    raw = yaml.safe_load((CLUSTERS / "aws.yaml").read_text())
    raw["available_node_types"]["head.cpu"]["resources"] = {"CPU": "zero"}
    with pytest.raises(jsonschema.ValidationError):
        validate_config(raw)


def _cluster_spec(name: str) -> dict[str, Any]:
    doc = KUBERAY[name]
    return {
        "raycluster": lambda: doc["spec"],
        "rayjob": lambda: doc["spec"]["rayClusterSpec"],
        "rayservice": lambda: doc["spec"]["rayClusterConfig"],
        "rayservice_service": lambda: doc["spec"]["rayClusterConfig"],
    }[name]()


@pytest.mark.parametrize("name", ["raycluster", "rayjob", "rayservice", "rayservice_service"])
def test_kuberay_manifests_pin_ray_and_keep_auth_on(name: str) -> None:
    doc = KUBERAY[name]
    assert doc["apiVersion"] == "ray.io/v1"
    assert (
        doc["kind"]
        == {
            "raycluster": "RayCluster",
            "rayjob": "RayJob",
            "rayservice": "RayService",
            "rayservice_service": "RayService",
        }[name]
    )
    spec = _cluster_spec(name)
    assert spec["rayVersion"] == "2.60.0"
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"  # dashboard not exposed
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    images = {c["image"] for p in pods for c in p["spec"]["containers"]}
    assert images <= _image_tags(), images - _image_tags()
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_rayjob_runs_a_job_and_config_that_exist() -> None:
    argv = shlex.split(KUBERAY["rayjob"]["spec"]["entrypoint"])
    assert argv[0] == "python" and (ROOT / argv[1]).is_file()
    cfg = config.load(ROOT / argv[argv.index("--config") + 1])
    assert cfg.storage_path.startswith(("s3://", "gs://")), "checkpoints on object storage"
    env = yaml.safe_load(KUBERAY["rayjob"]["spec"]["runtimeEnvYAML"])
    assert set(env) <= {"env_vars", "pip", "working_dir"}


def _check_serve_config(raw: dict[str, Any]) -> None:
    from ray.serve.schema import ServeDeploySchema

    from ddn_ray.serve import AppArgs, Predictor, app_builder

    schema = (
        ServeDeploySchema.model_validate(raw)
        if hasattr(ServeDeploySchema, "model_validate")
        else ServeDeploySchema.parse_obj(raw)
    )
    (app,) = schema.applications
    module, attr = app.import_path.split(":")
    assert module == "ddn_ray.serve" and attr == "app_builder"
    AppArgs(**app.args)
    assert app_builder(app.args) is not None
    assert {d.name for d in app.deployments} == {Predictor.name}
    auto = app.deployments[0].autoscaling_config
    assert 1 <= auto["min_replicas"] <= auto["initial_replicas"] <= auto["max_replicas"]


def test_serve_config_file_passes_serves_schema() -> None:
    raw = yaml.safe_load((CLUSTERS / "serve_config.yaml").read_text())
    _check_serve_config(raw)
    assert raw["http_options"]["host"] == "127.0.0.1"


def test_rayservice_serve_config_passes_serves_schema() -> None:
    raw = yaml.safe_load(KUBERAY["rayservice"]["spec"]["serveConfigV2"])
    _check_serve_config(raw)
    assert raw["applications"][0]["args"]["checkpoint"].startswith(("s3://", "gs://"))


def _check_service_config(raw: dict[str, Any]) -> list[config.JobConfig]:
    """Both applications of a service's Serve config: Serve's schema, our builders' args, the same config."""
    from ray.serve.schema import ServeDeploySchema

    from ddn_ray import service

    schema = ServeDeploySchema.model_validate(raw)
    learner, ingress = schema.applications
    assert (learner.import_path, ingress.import_path) == (
        "ddn_ray.service:learner_builder",
        "ddn_ray.service:ingress_builder",
    )
    assert learner.route_prefix is None and ingress.route_prefix == "/"
    cfgs = []
    for app in (learner, ingress):
        args = service.ServiceArgs(**app.args)
        assert (ROOT / args.config).is_file()
        overrides = dict(args.overrides)
        if "data" in overrides:  # object storage is not reachable here: check the rest against the shipped table
            overrides.pop("data")
        cfgs.append(service.service_config(ROOT / args.config, overrides))
    assert learner.name == service.learner_app_name(cfgs[0]) and ingress.name == cfgs[1].serve.app_name
    assert cfgs[0] == cfgs[1]  # the ingress follows the learner's controller
    return cfgs


def test_service_serve_config_passes_serves_schema() -> None:
    raw = yaml.safe_load((CLUSTERS / "service_config.yaml").read_text())
    (cfg, _) = _check_service_config(raw)
    assert raw["http_options"]["host"] == "127.0.0.1" and cfg.train.checkpoint_every_windows == 1


def test_service_rayservice_keeps_its_log_on_object_storage() -> None:
    raw = yaml.safe_load(KUBERAY["rayservice_service"]["spec"]["serveConfigV2"])
    (cfg, _) = _check_service_config(raw)
    assert cfg.storage_path.startswith(("s3://", "gs://"))
