"""Settings of every Trellis process: environment variables `TRELLIS_...`, nested with `__`.

Built once in a service's `__main__` and passed down; nothing reads the environment elsewhere.
Examples: `TRELLIS_KAFKA__BOOTSTRAP_SERVERS=broker:9092`, `TRELLIS_CLICKHOUSE__URL=http://ch:8123`,
`TRELLIS_AUTH__TOKENS_FILE=/var/run/secrets/trellis/tokens.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Role = Literal["service", "teacher", "learner", "district_admin", "platform_admin"]


class TopicSettings(BaseModel):
    """Topic names. A prefix keeps tests and tenants of a shared cluster apart."""

    prefix: str = ""
    activity: str = "trellis.activity.v1"
    roster: str = "trellis.roster.v1"
    catalog: str = "trellis.catalog.v1"
    mastery: str = "trellis.mastery.v1"
    deadletter: str = "trellis.deadletter.v1"
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    # Activity and mastery logs hold pseudonymous records only and expire by retention.
    retention_ms: int = 90 * 24 * 3600 * 1000

    def name(self, topic: str) -> str:
        return f"{self.prefix}{getattr(self, topic)}"


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "trellis"
    request_timeout_ms: int = 30_000
    session_timeout_ms: int = 45_000
    heartbeat_interval_ms: int = 3_000
    delivery_timeout_ms: int = 120_000
    compression_type: str = "gzip"
    topics: TopicSettings = TopicSettings()
    # Security of the connection to the brokers (docs/security.md), applied to every client by
    # trellis.common.kafka. PLAINTEXT by default; Strimzi's listeners are usually SSL or SASL_SSL.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # SSL and SASL_SSL: the CA of the brokers' certificates (unset: the system's roots) ...
    ssl_ca_file: Path | None = None
    # ... and, for a listener with client authentication (mTLS), this client's certificate and key.
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    # SASL_PLAINTEXT and SASL_SSL: the mechanism, user and password (inline, or from a file such as
    # a mounted Secret's key, like the tokens).
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def sasl_secret(self) -> str:
        """The SASL password: the file's content (trailing newline dropped) or the inline one."""
        if self.sasl_password_file is not None:
            return self.sasl_password_file.read_text().rstrip("\r\n")
        return self.sasl_password.get_secret_value() if self.sasl_password else ""

    @model_validator(mode="after")
    def _security_is_complete(self) -> KafkaSettings:
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("kafka: ssl_cert_file and ssl_key_file go together")
        if self.uses_sasl and not self.sasl_username:
            raise ValueError(f"kafka: {self.security_protocol} needs sasl_username")
        if self.uses_sasl and self.sasl_password is None and self.sasl_password_file is None:
            raise ValueError(f"kafka: {self.security_protocol} needs a sasl_password(_file)")
        return self


class ClickHouseSettings(BaseModel):
    """No `url`: embedded chDB at `chdb_path`. With `url`: a ClickHouse server over HTTP."""

    url: str | None = None
    chdb_path: Path = Path(".local/chdb")
    database: str = "trellis"


class Principal(BaseModel):
    """What a bearer token may do: one tenant, one role, and a scope inside the tenant."""

    tenant_id: str
    role: Role = "service"
    # Empty: every school of the tenant.
    schools: list[str] = []
    classes: list[str] = []
    # For role `learner`: the learner's own SIS id.
    learner_id: str | None = None


def _principals(inline: dict[str, Principal], file: Path | None) -> dict[str, Principal]:
    """Inline entries over those of the file (a mounted secret: {key: principal})."""
    if file is None:
        return dict(inline)
    loaded = json.loads(file.read_text())
    return {**{k: Principal.model_validate(p) for k, p in loaded.items()}, **inline}


class AuthSettings(BaseModel):
    """Who a caller is: its bearer token, or its verified client certificate (mTLS, see
    GrpcTlsSettings), each mapped to a Principal, inline (`TRELLIS_AUTH__TOKENS` as JSON) or from
    a mounted secret file. A certificate is named by grpc's peer identity: its subject alternative
    names (DNS, URI, e-mail, IP) if it has any, else its subject common name (docs/security.md)."""

    tokens: dict[str, Principal] = {}
    tokens_file: Path | None = None
    certificates: dict[str, Principal] = {}
    certificates_file: Path | None = None

    def all_tokens(self) -> dict[str, Principal]:
        return _principals(self.tokens, self.tokens_file)

    def all_certificates(self) -> dict[str, Principal]:
        return _principals(self.certificates, self.certificates_file)


class PseudonymSettings(BaseModel):
    """Per-tenant HMAC keys, versioned so that a key can be rotated: {tenant: {version: secret}}."""

    keys: dict[str, dict[int, SecretStr]] = {}
    keys_file: Path | None = None

    def all_keys(self) -> dict[str, dict[int, SecretStr]]:
        if self.keys_file is None:
            return dict(self.keys)
        loaded = json.loads(self.keys_file.read_text())
        from_file = {
            tenant: {int(v): SecretStr(k) for v, k in versions.items()}
            for tenant, versions in loaded.items()
        }
        return {**from_file, **self.keys}


class GrpcTlsSettings(BaseModel):
    """TLS of Trellis's gRPC: the servers, and the channels one service opens to another.
    Off by default (plaintext, loopback). PEM files, e.g. from a mounted Secret."""

    enabled: bool = False
    # Serving: the certificate chain and key of this process's server.
    cert_file: Path | None = None
    key_file: Path | None = None
    # mTLS: every client must present a certificate signed by this CA. grpc's Python server cannot
    # ask for an optional certificate, so a CA without the requirement would never see one.
    client_ca_file: Path | None = None
    require_client_cert: bool = False
    # Calling another service: the CA that signed its certificate (unset: the system's roots) ...
    ca_file: Path | None = None
    # ... the certificate this process presents when the callee requires one ...
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    # ... and the name its certificate must carry when that is not the host being called (mastery
    # workers call each other by pod IP: their certificate names the service).
    server_name: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> GrpcTlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("grpc_tls: cert_file and key_file go together")
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("grpc_tls: client_cert_file and client_key_file go together")
        if (self.client_ca_file is None) == self.require_client_cert:
            raise ValueError("grpc_tls: require_client_cert and client_ca_file go together")
        return self


class ServerSettings(BaseModel):
    """Where one service listens. Loopback by default; a pod sets host 0.0.0.0."""

    host: str = "127.0.0.1"
    port: int
    metrics_port: int
    grace_seconds: float = 5.0
    # A plaintext port serving only the health service, for probes that cannot speak TLS
    # (Kubernetes' gRPC probes); unset: none.
    health_port: int | None = None


# One class per service so that overriding one field from the environment keeps the other defaults.
class IngestServer(ServerSettings):
    port: int = 50051
    metrics_port: int = 9101


class MasteryServer(ServerSettings):
    port: int = 50052
    metrics_port: int = 9102


class RecommenderServer(ServerSettings):
    port: int = 50053
    metrics_port: int = 9103


class ReportingServer(ServerSettings):
    port: int = 50054
    metrics_port: int = 9104


class ServicesSettings(BaseModel):
    ingest: IngestServer = IngestServer()
    mastery: MasteryServer = MasteryServer()
    recommender: RecommenderServer = RecommenderServer()
    reporting: ReportingServer = ReportingServer()


class IngestSettings(BaseModel):
    max_batch_size: int = Field(default=1_000, ge=1)
    # Batches being produced at once; one more answers RESOURCE_EXHAUSTED instead of queueing.
    max_in_flight_batches: int = Field(default=32, ge=1)
    dedup_capacity: int = Field(default=1_000_000, ge=0)
    # At start the dedup window is rebuilt from at most this many of the activity topic's latest
    # records (spread over its partitions), so that a restart keeps answering DUPLICATE. 0: off.
    dedup_restore_records: int = Field(default=200_000, ge=0)
    # An event naming an item, skill or resource that the tenant's catalog replica does not know:
    # "reject" it, "flag" it (accepted with a warning in the answer), or "off" (no check).
    unknown_references: Literal["reject", "flag", "off"] = "flag"


class MasterySettings(BaseModel):
    data_dir: Path = Path(".local/mastery")
    # Faust's own timeouts are long by default; the test profile shortens them.
    broker_session_timeout_s: float = 45.0
    broker_heartbeat_interval_s: float = 3.0
    consumer_group: str = "trellis-mastery"


class ReportingSettings(BaseModel):
    consumer_group: str = "trellis-reporting"
    batch_max_rows: int = 10_000
    batch_max_seconds: float = 1.0
    # District rollups: groups of fewer learners are withheld (small-cell suppression).
    min_cell_size: int = Field(default=10, ge=1)
    # Longest a report query may run (a shorter client deadline wins).
    query_timeout_s: float = Field(default=10.0, gt=0)
    # Who needs support: a skill below this mastery after at least this many attempts ...
    low_mastery_p: float = Field(default=0.4, ge=0, le=1)
    low_mastery_min_attempts: int = Field(default=3, ge=0)
    # ... or fewer than this many activity events over the last `recent_days` days.
    low_engagement_min_events: int = Field(default=3, ge=0)
    recent_days: int = Field(default=7, ge=1)
    # Ready to accelerate: at least this share of started skills mastered (and this many skills),
    # and not struggling in the recent window.
    accelerate_mastered_share: float = Field(default=0.8, ge=0, le=1)
    accelerate_min_skills: int = Field(default=3, ge=1)


class RecommenderSettings(BaseModel):
    """The recommender's upstream (the mastery read API) and its policy defaults
    (docs/recommender.md). Per-tenant band example:
    `TRELLIS_RECOMMENDER__TENANT_BANDS='{"district-a": [0.5, 0.8]}'`."""

    # host:port of the mastery read API; unset: TRELLIS_SERVICES__MASTERY__HOST and __PORT.
    mastery_address: str | None = None
    # Bearer token the recommender presents to the mastery read API (a `service` principal);
    # unset: the caller's own token is forwarded, so mastery applies the caller's scope too.
    mastery_token: SecretStr | None = None
    # Deadline of each call to the mastery read API.
    mastery_deadline_s: float = Field(default=0.5, gt=0)
    # Target band of predicted success for practice items, and per-tenant overrides [low, high].
    band_low: float = Field(default=0.6, ge=0, le=1)
    band_high: float = Field(default=0.85, ge=0, le=1)
    tenant_bands: dict[str, tuple[float, float]] = {}
    default_k: int = Field(default=3, ge=1)
    max_k: int = Field(default=10, ge=1)
    # One recommendation in this many offers a resource outside the learner's interests (0: never).
    broaden_every: int = Field(default=5, ge=0)
    review_after_days: float = Field(default=21.0, gt=0)
    group_min_size: int = Field(default=3, ge=1)
    group_max_size: int = Field(default=6, ge=1)

    def band(self, tenant_id: str) -> tuple[float, float]:
        return self.tenant_bands.get(tenant_id, (self.band_low, self.band_high))

    @model_validator(mode="after")
    def _bands_are_ordered(self) -> RecommenderSettings:
        for low, high in (self.band(""), *self.tenant_bands.values()):
            if not 0 <= low <= high <= 1:
                raise ValueError(f"target band must satisfy 0 <= low <= high <= 1: {low}, {high}")
        if self.group_max_size < self.group_min_size:
            raise ValueError("group_max_size must be at least group_min_size")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRELLIS_", env_nested_delimiter="__", extra="ignore"
    )

    log_level: str = "INFO"
    kafka: KafkaSettings = KafkaSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    auth: AuthSettings = AuthSettings()
    grpc_tls: GrpcTlsSettings = GrpcTlsSettings()
    pseudonym: PseudonymSettings = PseudonymSettings()
    services: ServicesSettings = ServicesSettings()
    ingest: IngestSettings = IngestSettings()
    mastery: MasterySettings = MasterySettings()
    reporting: ReportingSettings = ReportingSettings()
    recommender: RecommenderSettings = RecommenderSettings()

    @model_validator(mode="after")
    def _tokens_name_known_tenants(self) -> Settings:
        keys = self.pseudonym.all_keys()
        if keys:
            auth = self.auth
            for principal in (*auth.all_tokens().values(), *auth.all_certificates().values()):
                if principal.tenant_id not in keys:
                    raise ValueError(
                        f"principal of tenant {principal.tenant_id!r} has no pseudonym key"
                    )
        return self
