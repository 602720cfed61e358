"""The one config: `visual-search.yaml`, validated, every key overridable from the environment.

Environment variables win over the file so CI, tests and operators can move ports and URLs without
editing it: `VS_<SECTION>__<KEY>` (for example `VS_OPENSEARCH__URL`). `VS_CONFIG` points at another file.

Each key's meaning is written here once, as its field's `description` (a section's, as its docstring), and nowhere
else: `python -m cli config` (`explain`) and docs/operations.md's table (common/config_doc.py) are made from them,
and the file holds only what differs from the defaults.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from common.errors import VisualSearchError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "visual-search.yaml"


class ConfigError(VisualSearchError):
    """A config file or key that cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenSearchSettings(_Section):
    """The cluster: its URL and credentials, local nodes, the security plugin."""

    version: str = Field("2.19.1", description=(
        "the OpenSearch `make opensearch` assembles from Maven Central (core, and every plugin at `<version>.0`); "
        "a new version is a new build folder under `.cache/opensearch/`"))
    url: str = Field("http://127.0.0.1:9200", description=(
        "the cluster every tool, the adapter and the viewer talk to (node 0 of a local cluster); with "
        "`opensearch.security` on, an `http://` URL becomes `https://` (the secure node serves nothing else)"))
    username: str | None = Field(None, description=(
        "log in as this user; null: no login, or with `opensearch.security` on the users generated in "
        "`<run_dir>/credentials.json` (admin for the tools, vs_search for the viewer)"))
    password: str | None = Field(None, description="the password of `opensearch.username` (`python -m cli config` "
                                                    "prints `***`)")
    verify_certs: bool = Field(False, description=(
        "verify an https cluster's certificate against the system's CAs; once a CA is known (`opensearch.ca_certs`, "
        "or `opensearch.security` on) the certificate is always verified against it"))
    heap: str = Field("1g", description="the JVM heap of each local OpenSearch node")
    transport_port: int = Field(9300, description="the node-to-node port of local node 0 (node i: + i)")
    nodes: int = Field(1, ge=1, description=(
        "local nodes formed as one cluster (`make up NODES=3`): node i on the URL's port + i and "
        "`transport_port` + i; every node holds data and runs the models (ML Commons deploys the remote models on "
        "each). Going back to fewer needs `make clean` (the cluster remembers its voting nodes)"))
    security: bool = Field(False, description=(
        "the security plugin (`make up SECURE=1`): TLS with the project's own CA, users admin / vs_ingest / "
        "vs_search, the adapter's token. On: https, the server's certificate always verified (against "
        "`opensearch.ca_certs`), and without a username the tools log in with the users in "
        "`<run_dir>/credentials.json`, generated at the first secure start"))
    ca_certs: Path | None = Field(None, description=(
        "the CA that signed the cluster's certificate; null: `<run_dir>/certs/ca.pem`, generated at the first "
        "secure start"))
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
    """The inference server: ports, dynamic batching, local replicas or remote endpoints."""

    host: str = Field("127.0.0.1", description="where the adapter reaches the local Triton replicas")
    http_port: int = Field(8000, description=f"HTTP port of replica 0 (replica i: + {REPLICA_PORT_STEP} × i)")
    grpc_port: int = Field(8001, description=f"gRPC port of replica 0 (replica i: + {REPLICA_PORT_STEP} × i)")
    metrics_port: int = Field(8002, description=f"metrics port of replica 0 (replica i: + {REPLICA_PORT_STEP} × i)")
    max_batch_size: int = Field(16, ge=1, description=(
        "dynamic batching, for every model that can batch: the largest batch Triton forms"))
    preferred_batch_sizes: list[int] = Field([4, 8, 16], description=(
        "dynamic batching: batch sizes Triton sends as soon as it has gathered one"))
    max_queue_delay_us: int = Field(2000, ge=0, description=(
        "dynamic batching: how long a request may wait (microseconds) for others to fill a batch"))
    instances: int = Field(1, ge=1, description="instances of each model per Triton server (each runs a batch)")
    replicas: int = Field(1, ge=1, description=(
        f"local Triton servers (`make up TRITON_REPLICAS=2`), replica i on the ports above + {REPLICA_PORT_STEP} × i, "
        "each with its own repository and log; the adapter sends each request to the one with the fewest in flight "
        "and re-sends a failed replica's requests to another"))
    endpoints: list[str] = Field([], description=(
        "the HTTP host:port of each remote Triton host, used instead of local replicas (then none is started here)"))

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
    """The service between ML Commons and Triton: where it binds and is reached, image and queue bounds,
    URL fetching, the query cache, the token."""

    host: str = Field("127.0.0.1", description="where the adapter binds")
    port: int = Field(8200, description="the adapter's port")
    public_url: str | None = Field(None, description=(
        "how OpenSearch reaches the adapter, when that differs from where it binds (e.g. behind a proxy); "
        "null: http://host:port"))
    max_image_bytes: int = Field(20_000_000, gt=0, description=(
        "the largest image accepted, sent inline (checked by the ingest pipeline too) or fetched from `image_url`"))
    url_fetch_timeout_s: float = Field(10, gt=0, description="how long fetching one `image_url` may take")
    url_fetch_allow_private: bool = Field(False, description=(
        "let `image_url` name private, loopback or link-local addresses (off: the adapter cannot be used to reach "
        "its own network)"))
    url_fetch_max_concurrent: int = Field(16, ge=1, description="`image_url` fetches at once")
    analyze_concurrency: int = Field(4, ge=1, description=(
        "admission control in front of Triton: analyses sent to Triton at once (enough to fill its dynamic batches); "
        "the others wait their turn, and past `max_queue_wait_s` or `max_queued_bytes` the adapter answers busy (429, "
        "which ML Commons retries with backoff) instead of queueing without limit"))
    max_queue_wait_s: float = Field(600, gt=0, description=(
        "longest a document waits for its turn before the adapter answers busy; `ml_commons.read_timeout_s` must "
        "exceed it"))
    max_queued_bytes: int = Field(512_000_000, gt=0, description=(
        "image bytes allowed to wait in memory for their turn; past it the adapter answers busy"))
    unavailable_retry_s: float = Field(120, ge=0, description=(
        "while Triton has been unreachable for less than this, the adapter answers retryable busy (ML Commons waits "
        "and retries: a restart is absorbed); after it, a plain 503 (documents go to the dead letter with their "
        "image at once instead of holding the bulk)"))
    embed_cache_entries: int = Field(10_000, ge=0, description=(
        "query embeddings kept in memory for repeated queries, keyed by the served model (about 4 × dimension bytes "
        "each); 0: no cache"))
    token: str | None = Field(None, description=(
        "the bearer token every request but /health must carry (the connectors send it; `python -m cli config` "
        "prints `***`); null: none required, unless `opensearch.security` is on, which takes the one generated in "
        "`<run_dir>/credentials.json`. A change needs the adapters restarted and `make bootstrap`"))

    @property
    def url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


class ViewerSettings(_Section):
    """The search page `make up` serves (viewer/): it queries OpenSearch with the opensearch section's credentials,
    which never reach the browser."""

    host: str = Field("127.0.0.1", description="where the search page binds")
    port: int = Field(8300, description="the search page's port (http://127.0.0.1:8300/ by default)")

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
    """The CLIP and the detector, their weights, detection thresholds, precision (docs/models.md)."""

    clip_variant: str = Field(BUNDLED_CLIP, description=(
        f"the CLIP: {BUNDLED_CLIP}, the small one trained here on generated shapes scenes (export/shapes/shapes_clip), "
        f"the offline default whose results mean something; or one of {', '.join(MOBILECLIP2_VARIANTS)} with "
        "`models.clip_weights` (docs/models.md#mobileclip2-and-your-own-weights). A new vector dimension needs "
        "`bootstrap --allow-reindex`"))
    clip_weights: str | None = Field(None, description=(
        "a MobileCLIP2's weights: a local checkpoint or open_clip folder, or a hub id (e.g. "
        "hf-hub:timm/MobileCLIP2-S2-OpenCLIP); null with a MobileCLIP2: randomly initialised, results meaningless"))
    yolo_variant: str = Field("yolo11s", description=(
        "the detector's architecture for `models.yolo_weights` (names its model folder)"))
    yolo_weights: str | None = Field(None, description=(
        "a local YOLO .pt; null: the bundled shapes detector (export/shapes/)"))
    conf_threshold: float = Field(0.25, ge=0, le=1, description="detections below this confidence are dropped")
    iou_threshold: float = Field(0.45, ge=0, le=1, description=(
        "non-maximum suppression: a box overlapping a more confident one by more than this IoU is dropped"))
    max_det: int = Field(100, ge=1, le=1000, description="the most objects kept per image")
    max_image_pixels: int = Field(40_000_000, gt=0, description=(
        "bigger images get a clear error instead of an out-of-memory"))
    precision: Literal["fp32", "int8"] = Field("fp32", description=(
        "cpu profile: the ONNX files ONNX Runtime runs; int8: the quantized copies `python -m export` writes beside "
        "the fp32 ones (fidelity checked in tests/export, speed in bench --only int8); the gpu profile always "
        "serves fp32"))
    free_networks: bool = Field(False, description=(
        "benchmark only, never for search: serve the free networks (export/free_networks.py) in place of the "
        "detector and both encoders, same tensors and facts, so a run measures everything around the models "
        "(bench --only ceiling); fp32 only"))

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
    """The model group and the models' names, the connectors' pool, timeouts and retries."""

    model_group: str = Field("visual-search", description=(
        "the model group the models are registered in (with security on, usable only by the backend role "
        "visual_search_model_users)"))
    embed_model: str = Field("mobileclip-embed", description=(
        "the embedding model's name (text and image query embeddings; the search pipeline's default model)"))
    analyze_model: str = Field("visual-analyze", description="the analysis model's name (the ingest pipeline calls it)")
    max_connection: int = Field(2000, ge=1, description=(
        "the connectors' connection pool: ML Commons starts the model call of every document of a _bulk at once, "
        "and a call that waits ~10 s for a pooled connection fails (not configurable), so the pool must hold every "
        "document in flight on a node and the waiting happens in the adapter's queue instead; bulks larger than this "
        "go to the dead letter (retryable) (docs/design.md#the-connection-pool)"))
    connection_timeout_s: int = Field(10, ge=1, description="TCP connect to the adapter")
    read_timeout_s: int = Field(900, ge=1, description=(
        "how long a model call waits for the adapter's answer; must exceed `adapter.max_queue_wait_s`, or a queued "
        "document is cut off"))
    retry_backoff_millis: int = Field(1000, ge=1, description=(
        "busy answers (429 + the throttling header) are retried by ML Commons with exponential, jittered backoff "
        "starting here"))
    retry_timeout_s: int = Field(900, ge=1, description=(
        "how long ML Commons retries busy answers; then the document is dead-lettered"))


# Lucene's stored-fields codecs OpenSearch has without plugins: LZ4 (`default`) and DEFLATE (`best_compression`).
Codec = Literal["default", "best_compression"]
CODECS: tuple[str, ...] = get_args(Codec)


class IndexSettings(_Section):
    """The images index, its dead letter and pipelines: shards and replicas, HNSW, hybrid weights, codec,
    derived source."""

    name: str = Field("images", description=(
        "the images index (an alias over its versions `images-vN` once it has been rebuilt: write to the alias)"))
    dead_letter: str = Field("images-failed", description=(
        "where documents that failed analysis go, with the reason and their image, to be replayed (`make replay`)"))
    ingest_pipeline: str = Field("visual-ingest", description=(
        "the index's default ingest pipeline: analyzes each document with the analysis model"))
    search_pipeline: str = Field("visual-search", description=(
        "the index's default search pipeline: the embedding model for neural queries without a model id, and how "
        "hybrid scores combine"))
    shards: int | None = Field(None, ge=1, description="null: one per OpenSearch node (`opensearch.nodes`)")
    replicas: int | None = Field(None, ge=0, description=(
        "null: 1 when there are several nodes (one may go down without losing a document or a search hit), else 0"))
    hnsw_m: int = Field(16, ge=2, description="HNSW graph: links per vector (more: better recall, a bigger graph)")
    hnsw_ef_construction: int = Field(512, ge=2, description=(
        "HNSW graph: candidates considered while inserting a vector (more: better recall, slower indexing)"))
    hnsw_ef_search: int = Field(100, ge=1, description=(
        "candidates per query, sent with every query (method_parameters.ef_search): the lucene engine ignores the "
        "index setting"))
    codec: Codec = Field("default", description=(
        "how Lucene compresses the stored fields (each hit's _source): default = LZ4, a hit read in a fraction of "
        "the time; best_compression = DEFLATE, fewer bytes (both measured by bench --only cache bytes). An existing "
        "index takes a change in place (closed for a moment)"))
    derived_source: bool = Field(True, description=(
        "the k-NN plugin's derived source (index.knn.derived_source.enabled): the vectors, global and per object, "
        "are kept in the vector index only and put back into _source when a document is read, so the store is "
        "smaller (bench --only bytes) and a hit cheaper to read (bench --only cache), while a partial _update still "
        "keeps them. Experimental in 2.19 (later versions still carry its codec). An existing index keeps its value "
        "until it is rebuilt (`bootstrap --allow-reindex`)"))
    hybrid_weights: tuple[float, float] = Field((0.3, 0.7), description=(
        "hybrid queries: the lexical and the neural score, min-max normalized, are combined with these weights "
        "(sum 1)"))
    dead_letter_max_image_bytes: int = Field(5_000_000, ge=0, description=(
        "a dead letter keeps its image so it can be replayed; a permanently failed one only up to this size"))


class DuplicatesSettings(_Section):
    """Duplicate groups at ingest (connectors/adapter/duplicates.py): each image joins the group of an earlier copy
    of the same picture found in the index it is written to, or starts one named by its content hash."""

    enabled: bool = Field(True, description="look for earlier copies at ingest; off: every image is a group of its "
                                            "own picture's exact copies (content hash) and the lookup costs nothing")
    max_distance: int = Field(36, ge=0, le=256, description=(
        "bits of the 256-bit perceptual hash an image may differ by and still be a copy: lower splits more resized "
        "or recompressed copies off their original, higher joins more different pictures (join and false-share "
        "rates: bench --only relevance)"))
    candidates: int = Field(10, ge=1, le=100, description="nearest global embeddings checked for a copy")
    recent_s: float = Field(5, ge=0, description=(
        "how long an adapter remembers the groups it gave, for copies analyzed before the first copy is searchable "
        "(OpenSearch refreshes every second by default)"))
    lookup_timeout_s: float = Field(10, gt=0, description="the lookup's search; past it the document is dead-"
                                                          "lettered as retryable")


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file; kept as a settings source so env vars layer over it."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return read_yaml(self.path)


def config_path() -> Path:
    """The file the config is read from: `VS_CONFIG`, else the repository's visual-search.yaml."""
    return Path(os.environ.get("VS_CONFIG", DEFAULT_CONFIG))


def read_yaml(path: Path) -> dict[str, Any]:
    """The file's mapping; an empty file (or one of comments only) is an empty mapping: every key its default."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VS_", env_nested_delimiter="__", extra="forbid")

    profile: Literal["cpu", "gpu"] = Field("cpu", description=(
        "how Triton runs: cpu, the embedded tritonserver with the python backend (ONNX Runtime); gpu, the NVIDIA "
        "container (docker-compose.gpu.yml)"))
    cache_dir: Path = Field(Path(".cache"), description=(
        "git-ignored: downloads, the OpenSearch build, exported models, run state (relative to the repository)"))
    run_dir: Path | None = Field(None, description=(
        "the local stack's pids, logs, data, rendered Triton repository and credentials; null: `<cache_dir>/run`"))
    opensearch: OpenSearchSettings = OpenSearchSettings()
    triton: TritonSettings = TritonSettings()
    adapter: AdapterSettings = AdapterSettings()
    viewer: ViewerSettings = ViewerSettings()
    models: ModelSettings = ModelSettings()
    ml_commons: MLCommonsSettings = MLCommonsSettings()
    index: IndexSettings = IndexSettings()
    duplicates: DuplicatesSettings = DuplicatesSettings()

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
        return init_settings, env_settings, _YamlSource(settings_cls, config_path())

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
        path = config_path()
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid config ({path}, or a VS_* environment variable): {problems}") from exc


# --- where each value came from (`python -m cli config`) ---

SECRET_WORDS = ("password", "token")
MASK = "***"


@dataclass(frozen=True)
class ConfigEntry:
    """One key of the effective config: its value (as JSON would hold it), where it came from, what it means."""

    key: str
    value: Any
    source: str
    description: str


def sections() -> dict[str, type[BaseModel]]:
    """The top-level keys that hold a section, with the section's model."""
    return {name: field.annotation for name, field in Settings.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, _Section)}


def section_description(model: type[BaseModel]) -> str:
    """A section's meaning: its class docstring on one line (not inherited: a section without one has none)."""
    return " ".join((model.__dict__.get("__doc__") or "").split())


def config_fields() -> Iterator[tuple[str, FieldInfo]]:
    """Every leaf key, `section.key` (top-level ones bare), in the order the models declare them."""
    nested = sections()
    for name, field in Settings.model_fields.items():
        if name in nested:
            yield from ((f"{name}.{key}", sub) for key, sub in nested[name].model_fields.items())
        else:
            yield name, field


def default_value(field: FieldInfo) -> Any:
    """A field's default as JSON would hold it (a Path as a string, a tuple as a list)."""
    return to_jsonable_python(field.get_default(call_default_factory=True))


def is_secret(key: str) -> bool:
    """Passwords and tokens: never printed, so a shared `cli config` output leaks nothing."""
    return any(word in key.rsplit(".", 1)[-1] for word in SECRET_WORDS)


def _env_source(key: str, environ: Mapping[str, str]) -> str | None:
    """The `VS_` variable that sets `key`, as pydantic-settings matches them: case-insensitive, `__` between a
    section and its key, or a whole section as one JSON object (`VS_TRITON='{"http_port": 9000}'`)."""
    names = {name.lower(): name for name in environ}
    leaf = names.get("vs_" + key.replace(".", "__"))
    if leaf is not None:
        return f"env {leaf}"
    section, _, name = key.rpartition(".")
    whole = names.get(f"vs_{section}") if section else None
    if whole is not None:
        try:
            holds = json.loads(environ[whole])
        except ValueError:
            return None
        if isinstance(holds, dict) and name in holds:
            return f"env {whole}"
    return None


def _in_file(key: str, data: Mapping[str, Any]) -> tuple[bool, Any]:
    """(whether the file sets `key`, the value it sets)."""
    section, _, name = key.rpartition(".")
    holder = data.get(section) if section else data
    return (True, holder[name]) if isinstance(holder, dict) and name in holder else (False, None)


def _shown(path: Path) -> str:
    """A path as the report names it: relative to the repository when inside it, so it stays short."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def explain(settings: Settings, environ: Mapping[str, str] | None = None) -> list[ConfigEntry]:
    """Every key of `settings` with where its value came from.

    pydantic-settings keeps no record of that, so this reads the same inputs again, as `Settings` layers them: a
    `VS_` environment variable wins over the file (`VS_CONFIG`, else visual-search.yaml), which wins over the
    default. A value a validator filled in (the index layout from `opensearch.nodes`, https under security) is
    `derived` when nothing set it, or the file set it to null ("work it out"). Secrets are masked.
    """
    environ = os.environ if environ is None else environ
    path = Path(environ.get("VS_CONFIG", DEFAULT_CONFIG)).absolute()
    data = read_yaml(path)
    effective = settings.model_dump(mode="json")
    entries = []
    for key, field in config_fields():
        section, _, name = key.rpartition(".")
        value = (effective[section] if section else effective)[name]
        in_file, raw = _in_file(key, data)
        source = _env_source(key, environ)
        if source is None and in_file and not (raw is None and value is not None):
            source = f"file {_shown(path)}"
        if source is None:
            source = "default" if value == default_value(field) else "derived"
        if is_secret(key) and value is not None:
            value = MASK
        entries.append(ConfigEntry(key, value, source, field.description or ""))
    return entries


def format_value(value: Any) -> str:
    """A JSON-ready value as the YAML file would spell it: strings bare, the rest as JSON (null, true, [4, 8])."""
    return value if isinstance(value, str) else json.dumps(value)
