"""Each overlay renders with the real kustomize, and every object validates offline: built-in
kinds against the Kubernetes OpenAPI schemas (kubernetes-validate, strict), custom resources
against the CRD schemas in k8s/schemas/."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_helpers import DEPLOY, K8S, tool

from metarec.announce import models_root_of
from metarec.kafka_acls import Grant, trainer_grants, worker_grants
from metarec.settings import TrainerSettings, WorkerSettings

pytestmark = pytest.mark.deploy

K8S_VERSION = "1.33.0"
OVERLAYS = ("dev", "prod")
SETTINGS_ENV = {f"METAREC_{n.upper()}" for n in (*WorkerSettings.model_fields, *TrainerSettings.model_fields)}
# Read by the worker for Kafka static membership but not (yet) a WorkerSettings field.
PENDING_SETTINGS: set[str] = set()  # env names the manifests may set before a settings field exists
CRD_SCHEMAS = {
    ("kafka.strimzi.io/v1beta2", "Kafka"): "kafka.strimzi.io/kafka_v1beta2.yaml",
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): "kafka.strimzi.io/kafkanodepool_v1beta2.yaml",
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "kafka.strimzi.io/kafkatopic_v1beta2.yaml",
    ("kafka.strimzi.io/v1beta2", "KafkaUser"): "kafka.strimzi.io/kafkauser_v1beta2.yaml",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh/scaledobject_v1alpha1.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh/triggerauthentication_v1alpha1.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com/servicemonitor_v1.yaml",
}


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    r = subprocess.run([str(tool("kustomize", "METAREC_KUSTOMIZE")), "build", str(K8S / "overlays" / overlay)],
                       check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return tuple(d for d in yaml.safe_load_all(r.stdout) if d)


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    schema = yaml.safe_load((K8S / "schemas" / CRD_SCHEMAS[(api_version, kind)]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validation_errors(obj: dict[str, Any]) -> list[str]:
    """Why ``obj`` is invalid (empty when valid)."""
    key = (obj["apiVersion"], obj["kind"])
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    if key in CRD_SCHEMAS:
        return [f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
                for e in crd_validator(*key).iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{where}: no schema: {e.message}"]
    except kubernetes_validate.ValidationError as e:
        return [f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}"]
    return []


def one(objs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def config(objs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    return one(objs, "ConfigMap", next(
        o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("metarec-config")
    ))["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates(overlay: str) -> None:
    objs = render(overlay)
    assert len(objs) > 15
    errors = [e for o in objs for e in validation_errors(o)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_namespaced_to_the_overlay(overlay: str) -> None:
    objs = render(overlay)
    ns = one(objs, "Namespace")["metadata"]["name"]
    assert all(o["metadata"].get("namespace") == ns for o in objs if o["kind"] != "Namespace")


MUTATIONS = [
    ("StatefulSet", "metarec-adapter", lambda o: o["spec"]["template"]["spec"]["containers"][0]["ports"][0]
     .__setitem__("containerPort", "6066")),
    ("StatefulSet", "metarec-adapter", lambda o: o["spec"].__setitem__("replica", 2)),  # unknown field
    ("KafkaTopic", "metarec-events", lambda o: o["spec"].__setitem__("partitions", 0)),
    ("Kafka", "metarec", lambda o: o["spec"]["kafka"]["listeners"][0].__setitem__("type", "external")),
    ("KafkaNodePool", None, lambda o: o["spec"].pop("roles")),
    ("ScaledObject", "metarec-adapter", lambda o: o["spec"].pop("triggers")),
    ("ServiceMonitor", "metarec-adapter", lambda o: o["spec"]["endpoints"][0].__setitem__("interval", "15 seconds")),
    ("KafkaUser", "metarec-trainer", lambda o: o["spec"]["authorization"]["acls"][0]["operations"].append("Eat")),
    ("KafkaUser", "metarec-trainer", lambda o: o["spec"]["authorization"]["acls"][0]["resource"]
     .__setitem__("patternType", "prefixed")),
    ("Deployment", "metarec-trainer", lambda o: o["spec"]["strategy"].__setitem__("kind", "Recreate")),
]


@pytest.mark.parametrize(("kind", "name", "mutate"), MUTATIONS, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(MUTATIONS)])
def test_validation_rejects_a_broken_object(kind: str, name: str | None, mutate: Any) -> None:
    obj = copy.deepcopy(next(o for o in render("dev") if o["kind"] == kind and name in (None, o["metadata"]["name"])))
    assert validation_errors(obj) == []
    mutate(obj)
    assert validation_errors(obj), f"a broken {kind} passed validation"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_partitions_scaling_and_topics_agree(overlay: str) -> None:
    objs = render(overlay)
    cfg = config(objs)
    topics = {t["spec"]["topicName"]: t["spec"] for t in objs if t["kind"] == "KafkaTopic"}
    partitions = int(cfg["METAREC_PARTITIONS"])
    events = topics[cfg["METAREC_TOPIC_EVENTS"]]
    assert events["partitions"] == partitions
    assert cfg["METAREC_TOPIC_RECOMMENDATIONS"] in topics and cfg["METAREC_TOPIC_DEAD_LETTER"] in topics
    changelog = topics[f"{cfg['METAREC_APP_ID']}-users-changelog"]
    assert changelog["partitions"] == partitions and changelog["config"]["cleanup.policy"] == "compact"
    assert all(t.get("replicas", 1) == int(cfg["METAREC_REPLICATION_FACTOR"]) for t in topics.values())
    so = one(objs, "ScaledObject", "metarec-adapter")["spec"]
    assert so["maxReplicaCount"] == partitions
    assert 1 <= so["minReplicaCount"] <= so["maxReplicaCount"]
    trigger = so["triggers"][0]["metadata"]
    assert trigger["consumerGroup"] == cfg["METAREC_APP_ID"] and trigger["topic"] == cfg["METAREC_TOPIC_EVENTS"]
    assert trigger["bootstrapServers"] == cfg["METAREC_KAFKA_BOOTSTRAP"]
    assert so["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "metarec-adapter"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_names_are_settings(overlay: str) -> None:
    objs = render(overlay)
    names = set(config(objs))
    for o in objs:
        if o["kind"] in ("StatefulSet", "Deployment", "CronJob"):
            spec = o["spec"]["jobTemplate"]["spec"]["template"]["spec"] if o["kind"] == "CronJob" else \
                o["spec"]["template"]["spec"]
            names |= {e["name"] for c in spec["containers"] for e in c.get("env", [])}
    unknown = names - SETTINGS_ENV - PENDING_SETTINGS
    assert not unknown, f"not WorkerSettings/TrainerSettings fields: {sorted(unknown)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_adapter_pod(overlay: str) -> None:
    objs = render(overlay)
    cfg = config(objs)
    sts = one(objs, "StatefulSet", "metarec-adapter")
    assert "replicas" not in sts["spec"], "KEDA owns the replica count"
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["METAREC_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    port = WorkerSettings.model_fields["web_port"].default
    assert int(cfg["METAREC_WEB_PORT"]) == port
    assert c["ports"] == [{"name": "http", "containerPort": port}]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/metrics", "port": "http"}, probe
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    data_mounts = [m for m in c["volumeMounts"] if cfg["METAREC_DATA_DIR"].startswith(m["mountPath"])]
    assert data_mounts
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    if overlay == "prod":  # RocksDB on a volume of each pod's own: a restart reads its state locally
        assert cfg["METAREC_STORE"] == "rocksdb://"
        assert data_mounts[0]["name"] in claims and data_mounts[0]["name"] not in volumes
    else:  # dev: memory store, an emptyDir (the changelog rebuilds the state at each start)
        assert cfg["METAREC_STORE"] == "memory://" and "emptyDir" in volumes[data_mounts[0]["name"]]
    models = next(m for m in c["volumeMounts"] if cfg["METAREC_MODEL_DIR"].startswith(m["mountPath"]))
    assert models["readOnly"] is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitoring_objects(overlay: str) -> None:
    objs = render(overlay)
    sm = one(objs, "ServiceMonitor", "metarec-adapter")
    svc = one(objs, "Service", "metarec-adapter")  # the job label, and the alert rules' job="metarec-adapter"
    labels = svc["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    headless = one(objs, "Service", "metarec-adapter-headless")
    assert "metarec.io/headless" in headless["metadata"]["labels"]  # excluded by the ServiceMonitor
    for kind in ("PodDisruptionBudget", "NetworkPolicy", "CronJob", "Deployment", "Kafka", "KafkaUser"):
        assert any(o["kind"] == kind for o in objs), kind
    dash = one(objs, "ConfigMap", "metarec-grafana-dashboard")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dash["data"]["metarec.json"]) == json.loads((DEPLOY / "grafana/dashboards/metarec.json").read_text())


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"] if obj["kind"] == "CronJob" else \
        obj["spec"]["template"]["spec"]


def models_mount(obj: dict[str, Any], container: dict[str, Any]) -> tuple[str, bool]:
    """(mount path, read-only) of the metarec-models claim in ``container`` of ``obj``'s pod."""
    volumes = {v["name"]: v for v in pod_spec(obj)["volumes"]}
    (m,) = [m for m in container["volumeMounts"]
            if volumes.get(m["name"], {}).get("persistentVolumeClaim", {}).get("claimName") == "metarec-models"]
    return m["mountPath"], bool(m.get("readOnly", False))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_continual_trainer(overlay: str) -> None:
    objs = render(overlay)
    cfg = config(objs)
    dep = one(objs, "Deployment", "metarec-trainer")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}  # never two
    pod = pod_spec(dep)
    (c,) = pod["containers"]
    assert c["args"] == ["trainer"]
    port = TrainerSettings.model_fields["trainer_web_port"].default
    assert int(cfg["METAREC_TRAINER_WEB_PORT"]) == port
    assert c["ports"] == [{"name": "http", "containerPort": port}]
    for probe in ("livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/metrics", "port": "http"}, probe
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in (*pod["initContainers"], c):
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, container["name"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e}
    assert env["METAREC_KAFKA_SASL_USERNAME"] == env["METAREC_KAFKA_SASL_PASSWORD"] == "metarec-trainer-kafka-credentials"

    # one models volume at one path: the trainer writes, the workers read what the announcements name
    root = cfg["METAREC_MODELS_ROOT"]
    assert models_mount(dep, c) == (root, False)
    sts = one(objs, "StatefulSet", "metarec-adapter")
    assert models_mount(sts, pod_spec(sts)["containers"][0]) == (root, True)
    assert str(models_root_of(Path(cfg["METAREC_MODEL_DIR"]))) == root
    cron = one(objs, "CronJob", "metarec-trainer")
    assert models_mount(cron, pod_spec(cron)["containers"][0]) == (root, False)
    assert cron["spec"]["suspend"] is True  # it makes the first model; two trainers would both move latest
    pvc = one(objs, "PersistentVolumeClaim", "metarec-models")
    # several pods mount the claim, on any node in prod; dev's ReadWriteOnce holds them on one node
    assert pvc["spec"]["accessModes"] == (["ReadWriteMany"] if overlay == "prod" else ["ReadWriteOnce"])

    svc = one(objs, "Service", "metarec-trainer")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert not svc["spec"]["selector"].items() <= cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"][
        "labels"].items(), "the Service must not select the batch CronJob's pods"
    assert svc["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http"}]
    sm = one(objs, "ServiceMonitor", "metarec-trainer")  # job="metarec-trainer": the lifecycle alerts' job
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == "http"
    policies = [p for p in objs if p["kind"] == "NetworkPolicy"
                and p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
    assert any(port in [pt["port"] for rule in p["spec"].get("ingress", []) for pt in rule["ports"]] for p in policies)


def acls(user: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """(resource type, name, pattern, operation) for each ALLOW rule of a KafkaUser."""
    out = set()
    for rule in user["spec"]["authorization"]["acls"]:
        assert rule.get("type", "allow") == "allow" and rule.get("host", "*") == "*"
        r = rule["resource"]
        out |= {(r["type"], r["name"], r.get("patternType", "literal"), op) for op in rule["operations"]}
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_models_topic_and_acls(overlay: str) -> None:
    objs = render(overlay)
    cfg = config(objs)
    topics = {t["spec"]["topicName"]: t["spec"] for t in objs if t["kind"] == "KafkaTopic"}
    models = topics[cfg["METAREC_TOPIC_MODELS"]]
    assert models["partitions"] == 1 and models["config"]["cleanup.policy"] == "compact"

    assert one(objs, "Kafka", "metarec")["spec"]["kafka"]["authorization"]["type"] == "simple"
    users = {u["metadata"]["name"]: u for u in objs if u["kind"] == "KafkaUser"}
    assert set(users) == {"metarec-adapter", "metarec-trainer"}
    worker = WorkerSettings.model_construct(  # the names only: no connection settings to validate
        app_id=cfg["METAREC_APP_ID"], topic_events=cfg["METAREC_TOPIC_EVENTS"],
        topic_recommendations=cfg["METAREC_TOPIC_RECOMMENDATIONS"], topic_dead_letter=cfg["METAREC_TOPIC_DEAD_LETTER"],
        topic_models=cfg["METAREC_TOPIC_MODELS"])
    pattern = {"LITERAL": "literal", "PREFIXED": "prefix"}

    def strimzi(grants: list[Grant]) -> set[tuple[str, str, str, str]]:
        return {(g.resource.lower(), g.name, pattern[g.pattern], g.operation.capitalize()) for g in grants}

    # what `metarec acls` grants on a cluster without Strimzi, no more and no less
    assert acls(users["metarec-adapter"]) == strimzi(worker_grants(worker, "User:metarec-adapter"))
    # kafka_io.ensure_topics at the trainer's start: a topic it may not describe, it would try to create
    describe = {("topic", cfg[k], "literal", "Describe")
                for k in ("METAREC_TOPIC_RECOMMENDATIONS", "METAREC_TOPIC_DEAD_LETTER")}
    assert acls(users["metarec-trainer"]) == strimzi(
        trainer_grants(worker, "User:metarec-trainer", cfg["METAREC_TRAINER_GROUP"])) | describe
    for name, user in users.items():  # each user's password Secret is the one its pods log in with
        secret = user["spec"]["authentication"]["password"]["valueFrom"]["secretKeyRef"]["name"]
        if overlay == "dev":
            data = one(objs, "Secret", secret)["data"]
            assert base64.b64decode(data["METAREC_KAFKA_SASL_USERNAME"]).decode() == name


def test_kraft_node_pools() -> None:
    for overlay in OVERLAYS:
        objs = render(overlay)
        kafka = one(objs, "Kafka", "metarec")
        assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
        assert kafka["spec"]["kafka"]["version"] == "4.1.1"
        roles = {r for o in objs if o["kind"] == "KafkaNodePool" for r in o["spec"]["roles"]}
        assert roles == {"controller", "broker"}


def test_prod_is_bigger_than_dev() -> None:
    dev, prod = (config(render(o)) for o in OVERLAYS)
    assert int(prod["METAREC_PARTITIONS"]) > int(dev["METAREC_PARTITIONS"])
    assert int(prod["METAREC_REPLICATION_FACTOR"]) >= 3
    assert not any(o["kind"] == "Secret" for o in render("prod")), "prod credentials are created out of band"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubectl_builtin_kustomize_renders_the_same(overlay: str) -> None:
    """`kubectl apply -k` uses kubectl's own kustomize (v5.5.0 in kubectl 1.32), which panicked on
    prod's multi-document delete patch: it must render exactly what the pinned kustomize does."""
    import shutil

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (the pinned kustomize still renders every overlay above)")
    r = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)], check=False, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert tuple(d for d in yaml.safe_load_all(r.stdout) if d) == render(overlay)
