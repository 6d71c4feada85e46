"""docker-compose.yml and the Dockerfile, checked for structure (no Docker engine needed)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from deploy_helpers import DEPLOY, REPO, load_yaml

from metarec.settings import KafkaSettings, TrainerSettings, WorkerSettings

pytestmark = pytest.mark.deploy

COMPOSE_FILE = DEPLOY / "docker-compose.yml"
WEB_PORT = WorkerSettings.model_fields["web_port"].default
TRAINER_PORT = TrainerSettings.model_fields["trainer_web_port"].default
SETTINGS_ENV = {f"METAREC_{n.upper()}" for n in
                (*WorkerSettings.model_fields, *TrainerSettings.model_fields, *KafkaSettings.model_fields)}
PINNED_TAG = re.compile(r"^[^:@\s]+(:[\w][\w.-]*)(@sha256:[0-9a-f]{64})?$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def metarec_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if str(s.get("image", "")).startswith("metarec:")}


def test_services_present(compose: dict[str, Any]) -> None:
    svc = compose["services"]
    for name in ("kafka", "prometheus", "grafana", "train", "trainer", "replay", "adapter-1", "adapter-2"):
        assert name in svc, name
    workers = [n for n, s in svc.items() if s.get("command") == ["worker"]]
    assert len(workers) == 2
    assert svc["trainer"]["command"] == ["trainer"]  # the continual trainer, long-running
    assert svc["trainer"]["restart"] == "unless-stopped" and svc["train"]["restart"] == "no"


def test_every_image_is_pinned(compose: dict[str, Any]) -> None:
    for name, s in compose["services"].items():
        image = s.get("image")
        assert image, f"{name} has no image"
        assert PINNED_TAG.match(image), f"{name}: image {image!r} has no tag"
        assert not image.split("@")[0].endswith(":latest"), f"{name}: {image} uses latest"


def test_kafka_is_kraft_4_1_1(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_metarec_services_are_built_from_the_dockerfile(compose: dict[str, Any]) -> None:
    for name, s in metarec_services(compose).items():
        context = (DEPLOY / s["build"]["context"]).resolve()
        assert context == REPO, name
        assert (context / s["build"]["dockerfile"]).is_file(), name


def test_referenced_files_exist(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes", {}))
    for name, s in compose["services"].items():
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith((".", "/")):
                assert (DEPLOY / src).exists(), f"{name}: {src} does not exist"
            else:
                assert src in named, f"{name}: volume {src} is not declared"
        for f in s.get("env_file", []):
            assert (DEPLOY / f).is_file(), f"{name}: env_file {f}"


def test_env_vars_are_real_settings(compose: dict[str, Any]) -> None:
    for name, s in metarec_services(compose).items():
        env = s.get("environment", {})
        assert isinstance(env, dict), f"{name}: use the mapping form for environment"
        unknown = {k for k in env if k.startswith("METAREC_")} - SETTINGS_ENV
        assert not unknown, f"{name}: {sorted(unknown)} are not fields of WorkerSettings/TrainerSettings/KafkaSettings"
        assert all(k.startswith("METAREC_") for k in env), f"{name}: non-METAREC_ env {sorted(env)}"


def test_ports_agree_with_settings(compose: dict[str, Any]) -> None:
    workers = {n: s for n, s in metarec_services(compose).items() if s.get("command") == ["worker"]}
    for name, s in workers.items():
        port = int(s["environment"].get("METAREC_WEB_PORT", WEB_PORT))
        assert port == WEB_PORT, name
        assert [p.rsplit(":", 1)[1] for p in s["ports"]] == [str(WEB_PORT)], name
        assert f":{WEB_PORT}/metrics" in " ".join(s["healthcheck"]["test"]), name
    prom = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    targets = {t for j in prom["scrape_configs"] if j["job_name"] == "metarec-adapter"
               for sc in j["static_configs"] for t in sc["targets"]}
    assert targets == {f"{n}:{WEB_PORT}" for n in workers}
    trainer = compose["services"]["trainer"]
    port = int(trainer["environment"].get("METAREC_TRAINER_WEB_PORT", TRAINER_PORT))
    assert port == TRAINER_PORT
    assert [p.rsplit(":", 1)[1] for p in trainer["ports"]] == [str(port)]
    assert f":{port}/metrics" in " ".join(trainer["healthcheck"]["test"])
    trainer_targets = {t for j in prom["scrape_configs"] if j["job_name"] == "metarec-trainer"
                       for sc in j["static_configs"] for t in sc["targets"]}
    assert trainer_targets == {f"trainer:{port}"}


def test_trainer_and_workers_share_the_models_volume_at_one_path(compose: dict[str, Any]) -> None:
    """An announcement names the version directory as the trainer sees it: every worker must see it there."""
    svc = compose["services"]

    def models_mount(name: str) -> tuple[str, str]:
        (m,) = [v for v in svc[name]["volumes"] if v.split(":")[0] == "models"]
        path, *mode = m.split(":")[1:]
        return path, (mode or ["rw"])[0]

    root = svc["trainer"]["environment"]["METAREC_MODELS_ROOT"]
    assert models_mount("trainer") == (root, "rw") and models_mount("train") == (root, "rw")
    for name, s in svc.items():
        if s.get("command") == ["worker"]:
            assert models_mount(name) == (root, "ro"), name
            assert s["environment"]["METAREC_MODEL_DIR"].startswith(root + "/"), name
    assert svc["trainer"]["depends_on"]["train"]["condition"] == "service_completed_successfully"


def test_bootstrap_points_at_the_kafka_listener(compose: dict[str, Any]) -> None:
    listeners = compose["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    for name, s in metarec_services(compose).items():
        bootstrap = s["environment"]["METAREC_KAFKA_BOOTSTRAP"]
        assert f"//{bootstrap}" in listeners, f"{name}: {bootstrap} is not an advertised listener"


def test_topics_agree_with_the_environment(compose: dict[str, Any]) -> None:
    script = "\n".join(compose["services"]["topics"]["command"])
    env = compose["services"]["adapter-1"]["environment"]
    for key in ("METAREC_TOPIC_EVENTS", "METAREC_TOPIC_RECOMMENDATIONS", "METAREC_TOPIC_DEAD_LETTER"):
        assert f"--topic {env[key]} " in script
    partitions = env["METAREC_PARTITIONS"]
    assert f"--topic {env['METAREC_TOPIC_EVENTS']} --partitions {partitions} " in script
    changelog = f"{env['METAREC_APP_ID']}-users-changelog"
    assert re.search(rf"--topic {re.escape(changelog)} --partitions {partitions} .*cleanup.policy=compact", script)
    models = env["METAREC_TOPIC_MODELS"]  # one key, compacted: the newest announcement stays
    assert re.search(rf"--topic {re.escape(models)} --partitions 1 .*cleanup.policy=compact", script)


def dockerfile() -> tuple[list[str], dict[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", "\n".join(lines), re.MULTILINE))
    return lines, args


def test_dockerfile_pins_its_base_and_is_multistage() -> None:
    lines, args = dockerfile()
    froms = [ln.split()[1] for ln in lines if ln.upper().startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage build expected"
    for f in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f)
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", image), image


def test_dockerfile_runs_as_non_root_and_installs_the_project() -> None:
    lines, _ = dockerfile()
    users = [ln.split()[1] for ln in lines if ln.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert any(ln.startswith("RUN pip install") and ln.endswith(" .") for ln in lines)
    assert f"EXPOSE {WEB_PORT}" in lines


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".state", "data", "models"} <= ignored
    assert not ignored & {"shared", "services", "pyproject.toml"}
