"""The security plugin's configuration for a local node: TLS from the project's CA, the users and what each may do.

Written into the node's config folder before it starts, with `plugins.security.allow_default_init_securityindex`,
so the first start creates the security index from these files (no `securityadmin.sh` run, no demo certificates).
Later starts find the index and keep what it holds; `admin.pem` (the admin DN's client certificate) is what
changes it afterwards (`plugins/opensearch-security/tools/securityadmin.sh -cacert ca.pem -cert admin.pem -key
admin-key.pem ...`). The passwords and the adapter's token come from `common.credentials` (generated once).

The roles, least privilege for the two product users (index names and pipelines from the config):

* `vs_ingest` writes documents into the images index (the name, or its versions `<name>-v*` behind the alias a
  replacement creates) through the bulk API; its default pipeline calls the analysis model, so it may run ML
  predictions, and the pipeline's dead-letter route writes into the dead-letter index on its behalf, so it may
  write (never read) there. It cannot search, read or change anything.
* `vs_search` reads and searches the images index in every README mode: neural text and image queries, hybrid
  queries and nested object queries with inner hits. The `neural` query embeds the query through ML Commons with
  the caller's identity, so it may run ML predictions too. It cannot write, read the dead letters, see or change
  ML Commons' configuration (connectors, models, settings) or the cluster's settings.
* Both may predict only with the models of the managed model group: ML Commons' model access control lets a user
  use a model when one of its backend roles is one the model group names (`MODEL_USERS_ROLE`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt

from common.config import Settings, load_config
from common.credentials import (
    ADMIN_USER,
    CREDENTIALS_FILE,
    INGEST_USER,
    MODEL_USERS_ROLE,
    SEARCH_USER,
    Credentials,
    ensure_credentials,
)
from common.errors import EXIT_OK, EXIT_UNUSABLE, run_command
from localstack.certs import CertPaths, ensure_certs

SECURITY_CONFIG_DIR = "opensearch-security"  # inside the node's config folder, where the plugin reads its files
# The certificates are copied into the node's config folder: the plugin reads files only from there.
CA_FILE, NODE_CERT, NODE_KEY = "ca.pem", "node.pem", "node-key.pem"
# ML Commons' and the job scheduler's indices: only the plugins themselves (never a user, not even admin) write them.
SYSTEM_INDICES = (
    ".plugins-ml-config", ".plugins-ml-connector", ".plugins-ml-controller", ".plugins-ml-model-group",
    ".plugins-ml-model", ".plugins-ml-task", ".plugins-ml-conversation-meta", ".plugins-ml-conversation-interactions",
    ".plugins-ml-memory-meta", ".plugins-ml-memory-message", ".plugins-ml-stop-words", ".plugins-ml-agent",
    ".opendistro-job-scheduler-lock", ".opensearch-knn-models",
)


def _meta(kind: str) -> dict[str, Any]:
    return {"_meta": {"type": kind, "config_version": 2}}


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=12)).decode()


def product_indices(settings: Settings) -> list[str]:
    """The images index by its name and by its versions (a replacement makes the name an alias of `<name>-vN`)."""
    return [settings.index.name, f"{settings.index.name}-v*"]


def internal_users(creds: Credentials) -> dict[str, Any]:
    return {**_meta("internalusers"),
            ADMIN_USER: {"hash": _hash(creds.password(ADMIN_USER)), "reserved": True,
                         "backend_roles": ["admin", MODEL_USERS_ROLE], "description": "administration, bootstrap"},
            INGEST_USER: {"hash": _hash(creds.password(INGEST_USER)), "backend_roles": [MODEL_USERS_ROLE],
                          "description": "indexes images through the ingest pipeline"},
            SEARCH_USER: {"hash": _hash(creds.password(SEARCH_USER)), "backend_roles": [MODEL_USERS_ROLE],
                          "description": "searches the images index"}}


def roles(settings: Settings) -> dict[str, Any]:
    predict = "cluster:admin/opensearch/ml/predict"
    write = ["indices:data/write/index", "indices:data/write/bulk*", "indices:data/write/update",
             "indices:admin/mapping/put"]
    return {**_meta("roles"),
            INGEST_USER: {"description": "index images through their pipeline, nothing else",
                          "cluster_permissions": ["indices:data/write/bulk", predict],
                          "index_permissions": [
                              {"index_patterns": product_indices(settings), "allowed_actions": write},
                              {"index_patterns": [settings.index.dead_letter], "allowed_actions": write}]},
            SEARCH_USER: {"description": "search the images index in every mode, nothing else",
                          "cluster_permissions": [predict, "cluster_composite_ops_ro"],
                          "index_permissions": [
                              {"index_patterns": product_indices(settings), "allowed_actions": ["read"]}]}}


def roles_mapping() -> dict[str, Any]:
    return {**_meta("rolesmapping"),
            "all_access": {"reserved": True, "users": [ADMIN_USER], "backend_roles": ["admin"]},
            "security_rest_api_access": {"reserved": True, "users": [ADMIN_USER]},
            INGEST_USER: {"users": [INGEST_USER]},
            SEARCH_USER: {"users": [SEARCH_USER]}}


def authentication() -> dict[str, Any]:
    """HTTP basic against the internal users, nothing anonymous (a request without credentials gets 401)."""
    basic = {"description": "HTTP basic against the internal users", "http_enabled": True,
             "transport_enabled": True, "order": 0, "http_authenticator": {"type": "basic", "challenge": True},
             "authentication_backend": {"type": "intern"}}
    return {**_meta("config"), "config": {"dynamic": {"http": {"anonymous_auth_enabled": False},
                                                      "authc": {"basic_internal_auth_domain": basic}, "authz": {}}}}


def node_settings(certs: CertPaths) -> dict[str, Any]:
    """`opensearch.yml` entries: TLS on HTTP and transport, the DNs the plugin trusts, first-start initialisation."""
    tls = {"pemcert_filepath": NODE_CERT, "pemkey_filepath": NODE_KEY, "pemtrustedcas_filepath": CA_FILE}
    return {
        **{f"plugins.security.ssl.transport.{k}": v for k, v in tls.items()},
        # one certificate for every local node: its SANs name this machine, not each node
        "plugins.security.ssl.transport.enforce_hostname_verification": False,
        "plugins.security.ssl.http.enabled": True,
        **{f"plugins.security.ssl.http.{k}": v for k, v in tls.items()},
        "plugins.security.allow_default_init_securityindex": True,
        "plugins.security.allow_unsafe_democertificates": False,
        "plugins.security.authcz.admin_dn": [certs.admin_dn],
        "plugins.security.nodes_dn": [certs.node_dn],
        "plugins.security.restapi.roles_enabled": ["all_access", "security_rest_api_access"],
        "plugins.security.system_indices.enabled": True,
        "plugins.security.system_indices.indices": list(SYSTEM_INDICES),
    }


@dataclass(frozen=True)
class NodeSecurity:
    """Everything a secure node needs in its config folder, and how a client logs in to check its health."""

    certs: CertPaths
    files: dict[str, dict[str, Any]]  # security config file name → content
    admin: tuple[str, str]

    @property
    def settings(self) -> dict[str, Any]:
        return node_settings(self.certs)

    def install(self, conf_dir: Path) -> None:
        """Certificates and security config files into a node's (fresh) config folder. JSON is valid YAML."""
        for source, name in ((self.certs.ca, CA_FILE), (self.certs.node, NODE_CERT), (self.certs.node_key, NODE_KEY)):
            shutil.copy2(source, conf_dir / name)
        target = conf_dir / SECURITY_CONFIG_DIR
        target.mkdir(exist_ok=True)
        for name, content in self.files.items():
            (target / name).write_text(json.dumps(content, indent=1) + "\n")


def ensure_secrets(settings: Settings, hosts: Sequence[str] = ()) -> tuple[Credentials, CertPaths]:
    """The credentials and certificates of the run folder, generated on the first call and reused after (the node
    certificate reissued when it does not name every one of `hosts`)."""
    run = settings.run_path
    return ensure_credentials(run / CREDENTIALS_FILE), ensure_certs(run / "certs", hosts)


def prepare(settings: Settings, hosts: Sequence[str] = ()) -> NodeSecurity:
    """Credentials and certificates (see `ensure_secrets`) and the rendered configuration."""
    creds, certs = ensure_secrets(settings, hosts)
    files = {"internal_users.yml": internal_users(creds), "roles.yml": roles(settings),
             "roles_mapping.yml": roles_mapping(), "config.yml": authentication()}
    return NodeSecurity(certs, files, (ADMIN_USER, creds.password(ADMIN_USER)))


# The uid of the `opensearch` user in OpenSearch's container image: it must be able to read the node's key.
CONTAINER_UID = 1000


def export_config(settings: Settings, out: Path, hosts: Sequence[str]) -> Path:
    """Everything a containerised node needs to run secured like the local one (docker-compose.gpu.yml mounts it):
    an `opensearch.yml` (listening on every interface, plus `node_settings`), the certificates and the security
    config files, from the same credentials and CA as the local stack; `hosts` are added to the node certificate's
    names (the service's host name in the compose network, a load balancer's). When run as root the files are
    handed to the image's user, who alone may read the key."""
    node = prepare(settings, hosts)
    out.mkdir(parents=True, exist_ok=True)
    node.install(out)
    (out / "opensearch.yml").write_text(json.dumps({"network.host": "0.0.0.0", **node.settings}, indent=1) + "\n")
    if os.geteuid() == 0:
        for path in [out, *out.rglob("*")]:
            os.chown(path, CONTAINER_UID, CONTAINER_UID)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m localstack.security OUT_DIR [HOST ...]`: write a secured node's config for a container (see
    `export_config`); the credentials stay in <run_dir>/credentials.json, the CA in <run_dir>/certs/ca.pem."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m localstack.security OUT_DIR [HOST ...]", file=sys.stderr)
        return EXIT_UNUSABLE
    settings = load_config()
    out = export_config(settings, Path(args[0]), args[1:])
    print(f"{out} (CA: {settings.run_path / 'certs' / 'ca.pem'}, credentials: {settings.run_path / CREDENTIALS_FILE})")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(run_command(main))
