"""deploy/helm/trellis against the code: the rendered manifests may only name settings that exist,
must listen where the settings say, must provide every topic the code uses, and must keep pods
unprivileged; the chart refuses values that would break those rules.

Each check runs on the chart as `helm template` renders it with its default values, with every
example values file (deploy/helm/*.yaml), and under another release name (names derive from it).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tests.unit.deploy.manifests import (
    CHART,
    EXAMPLE_VALUES,
    SERVICES,
    SKIP_REASON,
    WORKLOAD_KINDS,
    Doc,
    Release,
    container_env,
    helm,
    helm_path,
    of_kind,
    render,
    settings_env_names,
    settings_from,
    workload,
)
from trellis.common.faust_app import changelog_topic_name
from trellis.common.kafka import ALL_TOPICS, COMPACTED
from trellis.common.settings import Settings
from trellis.mastery.stream.tables import TABLE_NAMES

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(helm_path() is None, reason=SKIP_REASON),
]

RELEASES = {
    "default-values": Release(),
    **{f"values-{path.stem}": Release(values=(path,)) for path in EXAMPLE_VALUES},
    "release-pilot": Release(name="pilot"),
}


@functools.cache
def _docs(case: str) -> list[Doc]:
    return render(RELEASES[case])


@pytest.fixture(params=sorted(RELEASES))
def docs(request: pytest.FixtureRequest) -> list[Doc]:
    return _docs(request.param)


def _mounts(pod: Doc, container: Doc, volume_kind: str) -> list[PurePosixPath]:
    kinds = {v["name"]: v for v in pod.get("volumes", [])}
    return [
        PurePosixPath(m["mountPath"])
        for m in container.get("volumeMounts", [])
        if volume_kind in kinds.get(m["name"], {})
    ]


def _under(path: str | Path, mounts: list[PurePosixPath]) -> bool:
    return any(PurePosixPath(path).is_relative_to(mount) for mount in mounts)


def effective_settings(docs: list[Doc], service: str, tmp_path: Path) -> Settings:
    """The settings the service's container builds: its ConfigMap and env, with a placeholder
    for each value taken from a Secret and an empty JSON file for each mounted secret file."""
    workload_doc, container = workload(docs, service)
    pod = workload_doc["spec"]["template"]["spec"]
    # Secrets come as secret volumes, or several at once as a projected volume.
    secret_mounts = _mounts(pod, container, "secret") + _mounts(pod, container, "projected")
    env = {}
    for name, entry in container_env(docs, container).items():
        if "value" not in entry:
            env[name] = f"placeholder-from-{name}"
        elif name.endswith("_FILE"):
            assert _under(entry["value"], secret_mounts), f"{name}: not on a secret volume"
            placeholder = tmp_path / name  # one per variable: the same for every service
            placeholder.write_text("{}")
            env[name] = str(placeholder)
        else:
            env[name] = str(entry["value"])
    return settings_from(env)


def _port(container: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def _selects(selector: dict[str, str], pod: Doc) -> bool:
    labels = pod["metadata"].get("labels", {})
    return all(labels.get(k) == v for k, v in selector.items())


def test_the_settings_walk_names_real_variables() -> None:
    names = settings_env_names()
    assert {"TRELLIS_KAFKA__TOPICS__PARTITIONS", "TRELLIS_SERVICES__MASTERY__HOST"} <= names
    assert "TRELLIS_KAFKA__TOPICS" not in names  # a section, not a variable


def test_every_trellis_variable_is_a_setting(docs: list[Doc]) -> None:
    named = {name for cm in of_kind(docs, "ConfigMap") for name in cm.get("data", {})}
    for doc in of_kind(docs, *WORKLOAD_KINDS):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            named |= {entry["name"] for entry in container.get("env", [])}
    unknown = {n for n in named if n.startswith("TRELLIS_")} - settings_env_names()
    assert not unknown, f"not settings fields: {sorted(unknown)}"


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_listens_where_its_manifests_say(
    docs: list[Doc], service: str, tmp_path: Path
) -> None:
    settings = effective_settings(docs, service, tmp_path)
    server = getattr(settings.services, service)
    workload_doc, container = workload(docs, service)
    pod = workload_doc["spec"]["template"]
    assert server.host == "0.0.0.0", "a pod must listen on every interface"
    assert _port(container, "grpc") == server.port
    assert _port(container, "metrics") == server.metrics_port
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(server.metrics_port)
    readiness = container["readinessProbe"]
    if settings.grpc_tls.enabled:
        # The kubelet's gRPC probes speak plaintext only: they ask the plaintext health port.
        assert server.health_port not in (None, server.port)
        assert _port(container, "health") == server.health_port
        assert readiness["grpc"]["port"] == server.health_port
    else:
        assert readiness["grpc"]["port"] == server.port, "readiness: the gRPC health protocol"
    liveness = container["livenessProbe"]
    live_port = (liveness.get("grpc") or liveness.get("tcpSocket"))["port"]
    assert _port(container, live_port) == server.port
    assert pod["spec"]["terminationGracePeriodSeconds"] > server.grace_seconds
    services = [s for s in of_kind(docs, "Service") if _selects(s["spec"].get("selector", {}), pod)]
    assert services, f"no Service selects {service}"
    for svc in services:
        for port in svc["spec"]["ports"]:
            assert _port(container, port.get("targetPort", port["port"])) == server.port


def test_the_recommender_reaches_mastery_through_a_service(docs: list[Doc], tmp_path: Path) -> None:
    address = effective_settings(docs, "recommender", tmp_path).recommender.mastery_address
    assert address is not None, "unset, the recommender would call its own mastery host setting"
    host, _, port = address.rpartition(":")
    [svc] = [s for s in of_kind(docs, "Service") if s["metadata"]["name"] == host.split(".")[0]]
    mastery_pod = workload(docs, "mastery")[0]["spec"]["template"]
    assert _selects(svc["spec"]["selector"], mastery_pod)
    assert int(port) in {p["port"] for p in svc["spec"]["ports"]}


def test_every_topic_the_code_uses_has_a_kafka_topic(docs: list[Doc], tmp_path: Path) -> None:
    settings = effective_settings(docs, "mastery", tmp_path)
    topics = settings.kafka.topics
    compacted = {topics.name(t) for t in COMPACTED} | {
        changelog_topic_name(settings.mastery.consumer_group, table) for table in TABLE_NAMES
    }
    expected = {topics.name(t) for t in ALL_TOPICS} | compacted
    kafka_topics = {t["spec"]["topicName"]: t for t in of_kind(docs, "KafkaTopic")}
    assert set(kafka_topics) == expected
    clusters = {t["metadata"]["labels"]["strimzi.io/cluster"] for t in kafka_topics.values()}
    assert len(clusters) == 1
    bootstrap = f"{clusters.pop()}-kafka-bootstrap"
    assert settings.kafka.bootstrap_servers.startswith(bootstrap), "another cluster's topics"
    for name, topic in kafka_topics.items():
        spec = topic["spec"]
        # Keys are routed by the partition count of the settings (co-partitioned tables too).
        assert spec["partitions"] == topics.partitions, name
        assert spec["replicas"] == topics.replication_factor, name
        config = spec["config"]
        assert int(config["min.insync.replicas"]) < spec["replicas"] or spec["replicas"] == 1
        if name in compacted:
            assert config["cleanup.policy"] == "compact", name
        else:
            assert config["cleanup.policy"] == "delete", name
            assert int(config["retention.ms"]) == topics.retention_ms, name


def test_every_service_reads_the_same_kafka_settings(docs: list[Doc], tmp_path: Path) -> None:
    kafka = {service: effective_settings(docs, service, tmp_path).kafka for service in SERVICES}
    assert len({k.model_dump_json() for k in kafka.values()}) == 1


def test_no_container_runs_as_root_or_writes_its_image(docs: list[Doc]) -> None:
    for doc in of_kind(docs, *WORKLOAD_KINDS):
        pod = doc["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
            where = f"{doc['metadata']['name']}/{container['name']}"
            assert security.get("runAsNonRoot") is True, where
            assert security.get("runAsUser", 0) != 0, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where


def test_state_lives_on_volumes(docs: list[Doc], tmp_path: Path) -> None:
    mastery, mastery_container = workload(docs, "mastery")
    claims = {c["metadata"]["name"] for c in mastery["spec"].get("volumeClaimTemplates", [])}
    data_mounts = [
        PurePosixPath(m["mountPath"])
        for m in mastery_container["volumeMounts"]
        if m["name"] in claims
    ]
    settings = effective_settings(docs, "mastery", tmp_path)
    assert _under(settings.mastery.data_dir, data_mounts), "RocksDB tables on the worker's PVC"
    reporting, reporting_container = workload(docs, "reporting")
    settings = effective_settings(docs, "reporting", tmp_path)
    if settings.clickhouse.url is None:
        pod = reporting["spec"]["template"]["spec"]
        mounts = _mounts(pod, reporting_container, "persistentVolumeClaim")
        assert _under(settings.clickhouse.chdb_path, mounts), "embedded chDB on a PVC"


def test_replicas_respect_the_state_they_hold(docs: list[Doc], tmp_path: Path) -> None:
    settings = effective_settings(docs, "mastery", tmp_path)
    mastery = workload(docs, "mastery")[0]
    assert mastery["kind"] == "StatefulSet"
    assert 1 <= mastery["spec"]["replicas"] <= settings.kafka.topics.partitions, (
        "a mastery worker beyond the activity topic's partitions owns nothing"
    )
    reporting = workload(docs, "reporting")[0]
    if effective_settings(docs, "reporting", tmp_path).clickhouse.url is None:
        assert reporting["spec"]["replicas"] == 1, "embedded chDB is one process's store"
        assert reporting["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_a_budget_and_admits_only_its_ports(docs: list[Doc], service: str) -> None:
    workload_doc, container = workload(docs, service)
    pod = workload_doc["spec"]["template"]
    budgets = [
        b
        for b in of_kind(docs, "PodDisruptionBudget")
        if _selects(b["spec"]["selector"]["matchLabels"], pod)
    ]
    assert len(budgets) == 1
    own_ports = {_port(container, "grpc"), _port(container, "metrics")}
    policies = [
        p
        for p in of_kind(docs, "NetworkPolicy")
        if _selects(p["spec"]["podSelector"].get("matchLabels", {}), pod)
    ]
    assert policies, f"no NetworkPolicy selects {service}"
    for policy in policies:
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("ports"), f"{policy['metadata']['name']}: a rule without ports"
            assert {_port(container, p["port"]) for p in rule["ports"]} <= own_ports


def test_secrets_are_referenced_never_rendered(docs: list[Doc]) -> None:
    assert not of_kind(docs, "Secret"), "secrets are created beside the chart, never in it"


def test_the_chart_lints() -> None:
    for values in ((), *((f"--values={path}",) for path in EXAMPLE_VALUES)):
        out = helm("lint", "--strict", str(CHART), *values)
        assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    ("set_values", "refusal"),
    [
        (("mastery.replicas=7",), "exceeds kafka.topics.partitions"),
        (("reporting.replicas=2",), "reporting.replicas must be 1 with embedded chDB"),
        (("kafka.topics.minInsyncReplicas=3",), "must be below replicationFactor"),
        (("settings.TRELLIS_KAFKA__TOPICS__PARTITIONS=12",), "derives it from its values"),
        (("settings.TRELLIS_MASTERY__CONSUMER_GROUP=other",), "derives it from its values"),
        (("settings.LOG_LEVEL=DEBUG",), "every setting is an environment variable TRELLIS_"),
    ],
)
def test_the_chart_refuses_values_that_break_the_rules(
    set_values: tuple[str, ...], refusal: str
) -> None:
    with pytest.raises(RuntimeError, match=refusal):
        render(Release(set_values=set_values))


def test_reporting_scales_with_a_clickhouse_server() -> None:
    docs = render(Release(set_values=("clickhouse.urlSecret.name=ch", "reporting.replicas=3")))
    reporting, container = workload(docs, "reporting")
    assert reporting["spec"]["replicas"] == 3
    assert reporting["spec"]["strategy"]["type"] == "RollingUpdate"
    assert not of_kind(docs, "PersistentVolumeClaim")
    assert {"name": "ch", "key": "url"} in [
        e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
    ]


def test_a_change_of_settings_rolls_every_pod() -> None:
    def checksums(docs: list[Doc]) -> set[str]:
        return {
            doc["spec"]["template"]["metadata"]["annotations"]["checksum/settings"]
            for doc in of_kind(docs, *WORKLOAD_KINDS)
        }

    before = checksums(_docs("default-values"))
    after = checksums(render(Release(set_values=("settings.TRELLIS_LOG_LEVEL=DEBUG",))))
    assert len(before) == len(after) == 1, "every workload carries the same settings' checksum"
    assert before != after


def test_settings_values_of_any_yaml_type_reach_the_processes(tmp_path: Path) -> None:
    """YAML numbers arrive in templates as floats, maps as maps: the ConfigMap must still hold
    what pydantic reads (7776000000, not 7.776e+09; JSON for a map)."""
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "settings": {
                    "TRELLIS_INGEST__DEDUP_CAPACITY": 5_000_000,
                    "TRELLIS_REPORTING__QUERY_TIMEOUT_S": 2.5,
                    "TRELLIS_RECOMMENDER__TENANT_BANDS": {"district-a": [0.5, 0.8]},
                },
                "kafka": {"topics": {"retentionMs": 31_536_000_000}},
            }
        )
    )
    docs = render(Release(values=(values,)))
    config_map = of_kind(docs, "ConfigMap")[0]["data"]
    assert json.loads(config_map["TRELLIS_RECOMMENDER__TENANT_BANDS"]) == {"district-a": [0.5, 0.8]}
    settings = effective_settings(docs, "ingest", tmp_path)
    assert settings.ingest.dedup_capacity == 5_000_000
    assert settings.reporting.query_timeout_s == 2.5
    assert settings.recommender.tenant_bands == {"district-a": (0.5, 0.8)}
    assert settings.kafka.topics.retention_ms == 31_536_000_000
    retention = {t["spec"]["config"].get("retention.ms") for t in of_kind(docs, "KafkaTopic")}
    assert retention == {None, 31_536_000_000}


def test_network_policies_are_optional() -> None:
    docs = render(Release(set_values=("networkPolicies.create=false",)))
    assert not of_kind(docs, "NetworkPolicy")


def test_kafka_topics_are_optional() -> None:
    docs = render(Release(set_values=("kafka.strimzi.manageTopics=false",)))
    assert not of_kind(docs, "KafkaTopic")
    assert {d["kind"] for d in docs} == {d["kind"] for d in _docs("default-values")} - {
        "KafkaTopic"
    }


# --- transport security (docs/security.md) ---

SECURED = Release(values=(CHART.parent / "secured-example.yaml",))
SECURITY_PREFIXES = (
    "TRELLIS_GRPC_TLS__",
    "TRELLIS_KAFKA__SECURITY",
    "TRELLIS_KAFKA__SSL_",
    "TRELLIS_KAFKA__SASL_",
    "TRELLIS_AUTH__CERTIFICATES",
)


def secret_source(docs: list[Doc], service: str, variable: str) -> tuple[str, str]:
    """The Secret and key that the file named by the container's `variable` is mounted from."""
    workload_doc, container = workload(docs, service)
    path = PurePosixPath(container_env(docs, container)[variable]["value"])
    pod = workload_doc["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        if not path.is_relative_to(mount["mountPath"]):
            continue
        inside = str(path.relative_to(mount["mountPath"]))
        volume = volumes[mount["name"]]
        if "secret" in volume:
            return volume["secret"]["secretName"], inside
        for source in volume.get("projected", {}).get("sources", []):
            for item in source["secret"]["items"]:
                if item["path"] == inside:
                    return source["secret"]["name"], item["key"]
    raise AssertionError(f"{service} {variable}: {path} is on no Secret")


def test_transport_security_is_off_by_default(tmp_path: Path) -> None:
    docs = _docs("default-values")
    for service in SERVICES:
        env = container_env(docs, workload(docs, service)[1])
        assert not [name for name in env if name.startswith(SECURITY_PREFIXES)], service
        settings = effective_settings(docs, service, tmp_path)
        assert not settings.grpc_tls.enabled
        assert settings.kafka.security_protocol == "PLAINTEXT"
        assert settings.kafka.bootstrap_servers.endswith(":9092")


@pytest.mark.parametrize("service", SERVICES)
def test_the_secured_example_mounts_every_file_its_settings_name(
    service: str, tmp_path: Path
) -> None:
    docs = render(SECURED)
    settings = effective_settings(docs, service, tmp_path)
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.bootstrap_servers.endswith(":9093"), "Strimzi's TLS listener"
    assert (settings.kafka.sasl_mechanism, settings.kafka.sasl_username) == (
        "SCRAM-SHA-512",
        "trellis-app",
    )
    tls = settings.grpc_tls
    assert tls.enabled and tls.require_client_cert
    expected = {
        "TRELLIS_KAFKA__SSL_CA_FILE": ("trellis-cluster-ca-cert", "ca.crt"),
        "TRELLIS_KAFKA__SASL_PASSWORD_FILE": ("trellis-app", "password"),
        "TRELLIS_GRPC_TLS__CERT_FILE": ("trellis-grpc-tls", "tls.crt"),
        "TRELLIS_GRPC_TLS__KEY_FILE": ("trellis-grpc-tls", "tls.key"),
        "TRELLIS_GRPC_TLS__CA_FILE": ("trellis-grpc-tls", "ca.crt"),
        "TRELLIS_GRPC_TLS__CLIENT_CA_FILE": ("trellis-grpc-tls", "ca.crt"),
        "TRELLIS_GRPC_TLS__CLIENT_CERT_FILE": ("trellis-grpc-tls", "tls.crt"),
        "TRELLIS_GRPC_TLS__CLIENT_KEY_FILE": ("trellis-grpc-tls", "tls.key"),
        "TRELLIS_AUTH__CERTIFICATES_FILE": ("trellis-secrets", "certificates.json"),
    }
    for variable, source in expected.items():
        assert secret_source(docs, service, variable) == source, variable


def test_mastery_checks_the_name_its_callers_use(tmp_path: Path) -> None:
    """Workers call each other by pod IP, the recommender calls the Service: the certificate
    both check is the one name, the mastery Service's."""
    docs = render(SECURED)
    server_name = effective_settings(docs, "mastery", tmp_path).grpc_tls.server_name
    address = effective_settings(docs, "recommender", tmp_path).recommender.mastery_address
    assert address is not None
    assert (
        server_name
        == address.rpartition(":")[0]
        == workload(docs, "mastery")[0]["metadata"]["name"]
    )


def test_kafka_client_certificates_come_from_the_users_secret(tmp_path: Path) -> None:
    docs = render(
        Release(
            set_values=(
                "kafka.security.protocol=SSL",
                "kafka.security.caSecret.name=cluster-ca",
                "kafka.security.clientCertSecret.name=trellis-user",
            )
        )
    )
    for service in SERVICES:
        kafka = effective_settings(docs, service, tmp_path).kafka
        assert kafka.security_protocol == "SSL" and kafka.sasl_username is None
        assert secret_source(docs, service, "TRELLIS_KAFKA__SSL_CERT_FILE") == (
            "trellis-user",
            "user.crt",
        )
        assert secret_source(docs, service, "TRELLIS_KAFKA__SSL_KEY_FILE") == (
            "trellis-user",
            "user.key",
        )
        assert secret_source(docs, service, "TRELLIS_KAFKA__SSL_CA_FILE") == (
            "cluster-ca",
            "ca.crt",
        )


@pytest.mark.parametrize(
    ("set_values", "refusal"),
    [
        (("kafka.security.protocol=TLS",), "must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
        (("kafka.security.protocol=SASL_SSL",), "needs kafka.security.sasl.username"),
        (("grpcTls.enabled=true",), "needs grpcTls.secretName"),
        (("grpcTls.requireClientCert=true",), "needs grpcTls.enabled"),
        (("settings.TRELLIS_GRPC_TLS__ENABLED=true",), "derives it from its values"),
        (("settings.TRELLIS_KAFKA__SASL_USERNAME=app",), "derives it from its values"),
    ],
)
def test_the_chart_refuses_incomplete_security(set_values: tuple[str, ...], refusal: str) -> None:
    with pytest.raises(RuntimeError, match=refusal):
        render(Release(set_values=set_values))
