"""The one config: `visual-search.yaml`, validated, every key overridable from the environment.

Environment variables win over the file so CI, tests and operators can move ports and URLs without
editing it: `VS_<SECTION>__<KEY>` (for example `VS_OPENSEARCH__URL`). `VS_CONFIG` points at another file.
"""

from __future__ import annotations

import os
import ssl
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from common.errors import VisualSearchError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "visual-search.yaml"


class ConfigError(VisualSearchError):
    """A config file or key that cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenSearchSettings(_Section):
    version: str = "2.19.1"
    url: str = "http://127.0.0.1:9200"
    username: str | None = None
    password: str | None = None
    verify_certs: bool = False
    heap: str = "1g"
    transport_port: int = 9300
    # Local nodes formed as one cluster (`make up NODES=3`): node i on the URL's port + i and transport_port + i.
    nodes: int = Field(1, ge=1)
    # The security plugin (TLS with the project's own CA, users, roles). On: the URL's scheme is https, the server's
    # certificate is always verified (against ca_certs), and without a username the tools log in with the users in
    # <run_dir>/credentials.json (generated at the first secure start).
    security: bool = False
    ca_certs: Path | None = None  # the CA that signed the cluster's certificate; null = <run_dir>/certs/ca.pem
    _run_path: Path | None = PrivateAttr(None)  # set by Settings: where the generated credentials and CA live

    @property
    def http_port(self) -> int:
        from urllib.parse import urlparse

        return urlparse(self.url).port or 9200

    def node_url(self, i: int) -> str:
        """The URL of local node i (node 0 is `url`)."""
        from urllib.parse import urlparse

        parsed = urlparse(self.url)
        return parsed._replace(netloc=f"{parsed.hostname}:{self.http_port + i}").geturl()

    @property
    def credentials_path(self) -> Path | None:
        from common.credentials import CREDENTIALS_FILE

        return self._run_path / CREDENTIALS_FILE if self._run_path is not None else None

    @property
    def ca_path(self) -> Path | None:
        """The CA to verify the cluster with; None when security is off and none is named."""
        if self.ca_certs is not None:
            return self.ca_certs
        if self.security and self._run_path is not None:
            return self._run_path / "certs" / "ca.pem"
        return None

    @property
    def verify(self) -> bool | ssl.SSLContext:
        """What an HTTP client's `verify` takes: a context trusting the CA, or whether to verify with the system's."""
        ca = self.ca_path
        if ca is None:
            return self.verify_certs
        try:
            return ssl.create_default_context(cafile=str(ca))
        except OSError as exc:
            raise ConfigError(f"cannot read the cluster's CA {ca} ({exc.strerror or exc}); the first secure start "
                              "(`make up SECURE=1`) generates it, or set opensearch.ca_certs") from exc

    def auth(self, user: str | None = None) -> tuple[str, str] | None:
        """(username, password) to log in with: the configured ones, else (security on) `user` (default admin) from
        the generated credentials file, read now (it may be written after the config was loaded)."""
        if self.username:
            return self.username, self.password or ""
        if not self.security or self.credentials_path is None:
            return None
        from common.credentials import ADMIN_USER, read_credentials

        name = user or ADMIN_USER
        return name, read_credentials(self.credentials_path).password(name)


REPLICA_PORT_STEP = 10  # local Triton replica i listens on the configured ports + 10 × i


class TritonSettings(_Section):
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch_size: int = Field(16, ge=1)
    preferred_batch_sizes: list[int] = [4, 8, 16]
    max_queue_delay_us: int = Field(2000, ge=0)
    instances: int = Field(1, ge=1)
    # Replicas: `replicas` local servers (replica i on the ports above + REPLICA_PORT_STEP × i), or `endpoints`, the
    # HTTP host:port of each remote Triton host (then the local stack starts none). The adapter spreads requests
    # over them (fewest in flight) and re-sends a failed replica's requests to another.
    replicas: int = Field(1, ge=1)
    endpoints: list[str] = []

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def replica_ports(self, i: int) -> tuple[int, int, int]:
        """(http, grpc, metrics) of local replica i."""
        step = REPLICA_PORT_STEP * i
        return self.http_port + step, self.grpc_port + step, self.metrics_port + step

    @property
    def local_replicas(self) -> int:
        return 0 if self.endpoints else self.replicas

    @property
    def urls(self) -> list[str]:
        """The HTTP host:port of every Triton the adapter sends to."""
        if self.endpoints:
            return list(self.endpoints)
        return [f"{self.host}:{self.replica_ports(i)[0]}" for i in range(self.replicas)]


class AdapterSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 8200
    public_url: str | None = None
    max_image_bytes: int = Field(20_000_000, gt=0)
    url_fetch_timeout_s: float = Field(10, gt=0)
    url_fetch_allow_private: bool = False
    url_fetch_max_concurrent: int = Field(16, ge=1)
    # Admission control in front of Triton: how many analyses run at once, how long one may wait for its
    # turn, and how many image bytes may wait in memory. Past either bound the adapter answers "busy"
    # (429, which ML Commons retries with backoff) instead of queueing without limit.
    analyze_concurrency: int = Field(4, ge=1)
    max_queue_wait_s: float = Field(600, gt=0)
    max_queued_bytes: int = Field(512_000_000, gt=0)
    # While Triton has been unreachable for less than this, "unavailable" is answered as retryable-busy
    # (ML Commons waits and retries: a restart is absorbed); after it, as a plain 503 (documents go to the
    # dead letter with their image at once instead of holding the bulk).
    unavailable_retry_s: float = Field(120, ge=0)
    # query embeddings kept for repeated queries (0 turns the cache off); about 4 × dimension bytes each
    embed_cache_entries: int = Field(10_000, ge=0)
    # The bearer token every request but /health must carry (the connectors send it). null: none required, unless
    # opensearch.security is on, which takes the one generated in <run_dir>/credentials.json.
    token: str | None = None

    @property
    def url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


class ViewerSettings(_Section):
    """The search page `make up` serves (viewer/): it queries OpenSearch with the opensearch section's credentials,
    which never reach the browser."""

    host: str = "127.0.0.1"
    port: int = 8300

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


# the CLIP trained here on generated shapes scenes (export/shapes/shapes_clip), the default offline: unlike a
# MobileCLIP2 without its weights, its search results mean something
BUNDLED_CLIP = "shapes-clip"
FREE_NETWORKS_DIR = "free-networks"  # under the models folder: the stand-ins models.free_networks serves
MOBILECLIP2_VARIANTS = ("MobileCLIP2-S0", "MobileCLIP2-S2", "MobileCLIP2-B", "MobileCLIP2-S3", "MobileCLIP2-S4",
                        "MobileCLIP2-L-14")


class ModelSettings(_Section):
    clip_variant: str = BUNDLED_CLIP
    clip_weights: str | None = None
    yolo_variant: str = "yolo11s"
    yolo_weights: str | None = None
    conf_threshold: float = Field(0.25, ge=0, le=1)
    iou_threshold: float = Field(0.45, ge=0, le=1)
    max_det: int = Field(100, ge=1, le=1000)
    max_image_pixels: int = Field(40_000_000, gt=0)
    # cpu profile: the ONNX files ONNX Runtime runs. int8 = quantized copies `python -m export` writes beside the
    # fp32 ones (fidelity checked in tests/export, speed in bench --only int8); the gpu profile always serves fp32.
    precision: Literal["fp32", "int8"] = "fp32"
    # Benchmark only, never for search: serve the free networks (export/free_networks.py) in place of the detector and
    # both encoders, same tensors and facts, so a run measures everything around the models (bench --only ceiling).
    free_networks: bool = False

    @model_validator(mode="after")
    def _free_networks_in_fp32(self) -> ModelSettings:
        if self.free_networks and self.precision != "fp32":
            raise ValueError("models.free_networks has no int8 copies: set models.precision to fp32")
        return self

    @field_validator("clip_variant")
    @classmethod
    def _known_variant(cls, value: str) -> str:
        known = (BUNDLED_CLIP, *MOBILECLIP2_VARIANTS)
        if value not in known:
            raise ValueError(f"unknown CLIP variant {value!r}; choose one of {list(known)}")
        return value


class MLCommonsSettings(_Section):
    model_group: str = "visual-search"
    embed_model: str = "mobileclip-embed"
    analyze_model: str = "visual-analyze"
    max_connection: int = Field(2000, ge=1)
    connection_timeout_s: int = Field(10, ge=1)
    read_timeout_s: int = Field(900, ge=1)
    retry_backoff_millis: int = Field(1000, ge=1)
    retry_timeout_s: int = Field(900, ge=1)


# Lucene's stored-fields codecs OpenSearch has without plugins: LZ4 (`default`) and DEFLATE (`best_compression`).
Codec = Literal["default", "best_compression"]
CODECS: tuple[str, ...] = get_args(Codec)


class IndexSettings(_Section):
    name: str = "images"
    dead_letter: str = "images-failed"
    ingest_pipeline: str = "visual-ingest"
    search_pipeline: str = "visual-search"
    # null: from opensearch.nodes (one shard per node; one replica when there is another node to hold it)
    shards: int | None = Field(None, ge=1)
    replicas: int | None = Field(None, ge=0)
    hnsw_m: int = Field(16, ge=2)
    hnsw_ef_construction: int = Field(512, ge=2)
    hnsw_ef_search: int = Field(100, ge=1)
    # How Lucene compresses the stored fields (each hit's `_source`): LZ4 reads a hit in a fraction of the time;
    # DEFLATE stored 0.7x the bytes while the vectors were in `_source`, 0.97x with derived source. An existing index
    # takes a change in place (closed for a moment).
    codec: Codec = "default"
    # The k-NN plugin's derived source: the vectors (global and per object) are kept in the vector index only and
    # put back into `_source` when a document is read, so the store is smaller (3.7 vs 8.5 KB per image) and a hit
    # is cheaper to read, while a partial `_update` still keeps them. The plugin calls it experimental in 2.19; its
    # later versions still carry 2.19's derived-source codec. Static and deferred: an existing index keeps its value
    # until it is rebuilt (`bootstrap --allow-reindex`).
    derived_source: bool = True
    # hybrid queries: lexical and neural scores, min-max normalized, combined with these weights (sum 1)
    hybrid_weights: tuple[float, float] = (0.3, 0.7)
    # A dead letter keeps its image so it can be replayed; a permanently failed one only up to this size.
    dead_letter_max_image_bytes: int = Field(5_000_000, ge=0)


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file; kept as a settings source so env vars layer over it."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        try:
            data = yaml.safe_load(self.path.read_text()) or {}
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {self.path}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {self.path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {self.path} must hold a mapping at the top level")
        return data


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VS_", env_nested_delimiter="__", extra="forbid")

    profile: Literal["cpu", "gpu"] = "cpu"
    cache_dir: Path = Path(".cache")
    run_dir: Path | None = None  # pids, logs and data of the local stack; default <cache_dir>/run
    opensearch: OpenSearchSettings = OpenSearchSettings()
    triton: TritonSettings = TritonSettings()
    adapter: AdapterSettings = AdapterSettings()
    viewer: ViewerSettings = ViewerSettings()
    models: ModelSettings = ModelSettings()
    ml_commons: MLCommonsSettings = MLCommonsSettings()
    index: IndexSettings = IndexSettings()

    _config_path: Path = DEFAULT_CONFIG

    @model_validator(mode="after")
    def _calls_outlast_the_queue(self) -> Settings:
        """ML Commons must wait longer than the adapter may keep a request queued, or a document that is
        about to be analyzed is cut off by the connector's read timeout."""
        if self.ml_commons.read_timeout_s <= self.adapter.max_queue_wait_s:
            raise ValueError(f"ml_commons.read_timeout_s ({self.ml_commons.read_timeout_s}) must exceed "
                             f"adapter.max_queue_wait_s ({self.adapter.max_queue_wait_s})")
        return self

    @model_validator(mode="after")
    def _secured_over_https(self) -> Settings:
        """Security on means TLS: a local http:// URL becomes https:// (the secure node serves nothing else), and the
        OpenSearch section learns where the generated credentials and CA are."""
        if self.opensearch.security and self.opensearch.url.startswith("http://"):
            self.opensearch.url = "https://" + self.opensearch.url.removeprefix("http://")
        self.opensearch._run_path = self.run_path
        return self

    @model_validator(mode="after")
    def _index_layout_from_the_nodes(self) -> Settings:
        """Shards spread the index over the nodes; a replica on another node keeps every document searchable and
        every write accepted while one node is down. One node has nowhere to put a replica."""
        nodes = self.opensearch.nodes
        if self.index.shards is None:
            self.index.shards = nodes
        if self.index.replicas is None:
            self.index.replicas = min(1, nodes - 1)
        return self

    @property
    def adapter_token(self) -> str | None:
        """The token the adapter requires and the connectors send: configured, else (security on) generated."""
        if self.adapter.token or not self.opensearch.security:
            return self.adapter.token
        from common.credentials import CREDENTIALS_FILE, read_credentials

        return read_credentials(self.run_path / CREDENTIALS_FILE).adapter_token

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        path = Path(os.environ.get("VS_CONFIG", DEFAULT_CONFIG))
        return init_settings, env_settings, _YamlSource(settings_cls, path)

    @cached_property
    def cache(self) -> Path:
        """Absolute cache folder (relative paths are relative to the repository root)."""
        path = self.cache_dir if self.cache_dir.is_absolute() else REPO_ROOT / self.cache_dir
        return path.resolve()

    @property
    def run_path(self) -> Path:
        if self.run_dir is None:
            return self.cache / "run"
        return (self.run_dir if self.run_dir.is_absolute() else REPO_ROOT / self.run_dir).resolve()

    @property
    def models_dir(self) -> Path:
        return self.cache / "models"

    @property
    def exported_clip_dir(self) -> Path:
        """Where the configured CLIP's export lives (what `python -m export` writes)."""
        return self.models_dir / self.models.clip_variant.lower()

    @property
    def exported_yolo_dir(self) -> Path:
        name = self.models.yolo_variant if self.models.yolo_weights else "shapes-yolo11n"
        return self.models_dir / name.lower()

    def _served(self, exported: Path) -> Path:
        return self.models_dir / FREE_NETWORKS_DIR / exported.name if self.models.free_networks else exported

    @property
    def clip_dir(self) -> Path:
        """The CLIP files Triton serves: the export, or its free-networks stand-in (models.free_networks)."""
        return self._served(self.exported_clip_dir)

    @property
    def yolo_dir(self) -> Path:
        return self._served(self.exported_yolo_dir)


def load_config(**overrides: Any) -> Settings:
    """Loads and validates the config; turns pydantic's report into one readable ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        path = os.environ.get("VS_CONFIG", DEFAULT_CONFIG)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid config ({path}, or a VS_* environment variable): {problems}") from exc
