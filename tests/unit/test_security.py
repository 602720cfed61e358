"""The pieces of a secured deployment that need no server: certificates, the credentials file, the config's view of
them, the security plugin's rendered configuration, the adapter's token check and the connectors that carry it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import bcrypt
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from fastapi.testclient import TestClient

from bootstrap import desired
from bootstrap.diff import diff
from bootstrap.observe import MLObject, Observed
from bootstrap.plan import GroupAccess
from common.config import load_config
from common.credentials import (
    ADMIN_USER,
    CREDENTIALS_FILE,
    INGEST_USER,
    MODEL_USERS_ROLE,
    SEARCH_USER,
    CredentialsError,
    ensure_credentials,
    read_credentials,
)
from common.model_facts import ClipFacts
from connectors.adapter.app import create_app
from connectors.adapter.middleware import authorized
from localstack import security
from localstack.certs import ensure_certs
from tests.triton_double import FakeTriton
from tests.unit.test_adapter_failures import jpeg_b64


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- certificates ----------------------------------------------------------------------------------------------
def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certificates_chain_to_the_generated_ca_and_name_this_machine(tmp_path: Path) -> None:
    paths = ensure_certs(tmp_path / "certs")
    ca, node, admin = load(paths.ca), load(paths.node), load(paths.admin)
    node.verify_directly_issued_by(ca)
    admin.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "::1"}
    usages = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)  # HTTP and transport
    assert admin.subject.rfc4514_string() == paths.admin_dn and node.subject.rfc4514_string() == paths.node_dn
    assert paths.admin_dn != paths.node_dn
    for key in (paths.ca_key, paths.node_key, paths.admin_key):
        assert mode(key) == 0o600
        assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # unencrypted PKCS#8, what the plugin reads
    assert "demo" not in ca.subject.rfc4514_string().lower()


def test_certificates_are_reused_and_reissued_only_for_new_hosts(tmp_path: Path) -> None:
    first = ensure_certs(tmp_path)
    before = {p: p.read_bytes() for p in (first.ca, first.node, first.admin)}
    ensure_certs(tmp_path)
    assert all(p.read_bytes() == data for p, data in before.items())
    ensure_certs(tmp_path, hosts=["10.0.0.7", "search-1.internal"])
    assert first.ca.read_bytes() == before[first.ca]  # clients keep trusting the same CA
    assert first.node.read_bytes() != before[first.node]
    sans = load(first.node).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "search-1.internal" in sans.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    load(first.node).verify_directly_issued_by(load(first.ca))


# --- the credentials file --------------------------------------------------------------------------------------
def test_credentials_are_generated_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "run" / CREDENTIALS_FILE
    first = ensure_credentials(path)
    assert mode(path) == 0o600
    assert set(first.passwords) == {ADMIN_USER, INGEST_USER, SEARCH_USER}
    assert len(set(first.passwords.values())) == 3 and len(first.adapter_token) >= 32
    assert ensure_credentials(path) == first == read_credentials(path)
    assert not list(path.parent.glob(".*.tmp"))


def test_missing_or_broken_credentials_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="SECURE=1"):
        read_credentials(tmp_path / CREDENTIALS_FILE)
    (tmp_path / CREDENTIALS_FILE).write_text(json.dumps({"users": {ADMIN_USER: "x"}, "adapter_token": "t"}))
    with pytest.raises(CredentialsError, match=INGEST_USER):
        read_credentials(tmp_path / CREDENTIALS_FILE)


# --- the config's view ----------------------------------------------------------------------------------------
def test_security_switches_to_verified_https_with_the_generated_secrets(tmp_path: Path) -> None:
    plain = load_config(run_dir=str(tmp_path))
    assert plain.opensearch.url.startswith("http://") and plain.opensearch.auth() is None
    assert plain.adapter_token is None and plain.opensearch.ca_path is None

    secure = load_config(run_dir=str(tmp_path), opensearch={"security": True})
    assert secure.opensearch.url.startswith("https://")
    assert secure.opensearch.ca_path == tmp_path / "certs" / "ca.pem"
    with pytest.raises(CredentialsError):  # read when needed, so a file written after loading is found
        secure.opensearch.auth()
    creds = ensure_credentials(tmp_path / CREDENTIALS_FILE)
    assert secure.opensearch.auth() == (ADMIN_USER, creds.password(ADMIN_USER))
    assert secure.opensearch.auth(SEARCH_USER) == (SEARCH_USER, creds.password(SEARCH_USER))
    assert secure.adapter_token == creds.adapter_token

    explicit = load_config(run_dir=str(tmp_path), opensearch={"security": True, "username": "ops", "password": "p",
                                                              "url": "https://search.example:9200"},
                           adapter={"token": "given"})
    assert explicit.opensearch.auth(SEARCH_USER) == ("ops", "p") and explicit.adapter_token == "given"


def test_security_is_switched_on_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VS_OPENSEARCH__SECURITY", "true")
    monkeypatch.setenv("VS_RUN_DIR", str(tmp_path))
    settings = load_config()
    assert settings.opensearch.security and settings.opensearch.url.startswith("https://")


# --- the security plugin's configuration ------------------------------------------------------------------------
def test_rendered_users_roles_and_node_settings(tmp_path: Path) -> None:
    settings = load_config(run_dir=str(tmp_path), opensearch={"security": True})
    node = security.prepare(settings)
    creds = read_credentials(tmp_path / CREDENTIALS_FILE)
    users = node.files["internal_users.yml"]
    for user in (ADMIN_USER, INGEST_USER, SEARCH_USER):
        assert bcrypt.checkpw(creds.password(user).encode(), users[user]["hash"].encode())
        assert MODEL_USERS_ROLE in users[user]["backend_roles"]
    roles = node.files["roles.yml"]
    index, dead = settings.index.name, settings.index.dead_letter

    def patterns(role: str, action_prefix: str) -> set[str]:
        return {p for perm in roles[role]["index_permissions"] if any(
            a == action_prefix or a.startswith(action_prefix) for a in perm["allowed_actions"])
                for p in perm["index_patterns"]}

    assert patterns(SEARCH_USER, "read") == {index, f"{index}-v*"}  # not the dead letters
    assert not patterns(SEARCH_USER, "indices:data/write")
    assert patterns(INGEST_USER, "indices:data/write") == {index, f"{index}-v*", dead}
    assert not patterns(INGEST_USER, "read")
    assert "cluster:admin/opensearch/ml/predict" in roles[SEARCH_USER]["cluster_permissions"]
    assert not any("settings" in p or p.endswith("/*") for r in (SEARCH_USER, INGEST_USER)
                   for p in roles[r]["cluster_permissions"])
    assert node.settings["plugins.security.authcz.admin_dn"] == [node.certs.admin_dn]
    assert node.settings["plugins.security.ssl.http.enabled"] is True
    assert not node.files["config.yml"]["config"]["dynamic"]["http"]["anonymous_auth_enabled"]

    conf = tmp_path / "conf"
    conf.mkdir()
    node.install(conf)
    assert (conf / "node-key.pem").exists() and (conf / "ca.pem").read_bytes() == node.certs.ca.read_bytes()
    assert json.loads((conf / "opensearch-security" / "roles.yml").read_text()) == roles


# --- the adapter's token ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("header", "ok"), [
    ("Bearer s3cret", True), ("bearer s3cret", True), ("Bearer  s3cret ", True), ("Bearer s3cre", False),
    ("Bearer s3cret2", False), ("Basic s3cret", False), ("s3cret", False), ("", False), (None, False),
])
def test_token_check(header: str | None, ok: bool) -> None:
    assert authorized(header, "s3cret") is ok


def test_adapter_requires_its_token_except_for_health() -> None:
    app = create_app(load_config(adapter={"token": "s3cret"}))
    with TestClient(app) as client:
        app.state.triton = FakeTriton()
        assert client.get("/health").status_code == 200
        refused = client.post("/v1/analyze", json={"image": jpeg_b64()})
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        assert refused.json()["retryable"] is True  # a deployment fault, never the document's
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.post("/v1/analyze", json={"image": jpeg_b64()},
                           headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_adapter_without_a_token_checks_nothing() -> None:
    app = create_app(load_config())
    with TestClient(app) as client:
        app.state.triton = FakeTriton()
        assert client.post("/v1/analyze", json={"image": jpeg_b64()}).status_code == 200


# --- the connectors and the model group -----------------------------------------------------------------------
@pytest.fixture
def clip() -> ClipFacts:
    return ClipFacts(weights="test", exported_at="2026-01-01T00:00:00Z", variant="MobileCLIP2-S2", embedding_dim=512,
                     image_size=256, mean=(0.0, 0.0, 0.0),
                     std=(1.0, 1.0, 1.0), interpolation="bilinear", context_length=77, vocab_size=49408)


def test_connectors_send_the_token_only_when_there_is_one(clip: ClipFacts) -> None:
    plain = desired.analyze_connector(load_config(), clip)
    assert plain["credential"] == {"adapter_token": "unused"}
    assert "Authorization" not in plain["actions"][0]["headers"]
    for make in (desired.analyze_connector, desired.embed_connector):
        body = make(load_config(adapter={"token": "s3cret"}), clip)
        assert body["credential"] == {"adapter_token": "s3cret"}
        assert body["actions"][0]["headers"]["Authorization"] == "Bearer ${credential.adapter_token}"


def _observed(group: MLObject) -> Observed:
    return Observed(cluster_settings={}, model_groups=(group,), connectors=(), models=(), ingest_pipelines={},
                    search_pipelines={}, index_templates={}, indices={})


def test_model_group_access_is_restricted_to_the_model_users_role(clip: ClipFacts, tmp_path: Path) -> None:
    secure = load_config(run_dir=str(tmp_path), opensearch={"security": True}, adapter={"token": "t"})
    want = desired.desired_state(secure, clip)
    assert want.cluster_settings["plugins.ml_commons.model_access_control_enabled"] == "true"
    name = secure.ml_commons.model_group
    open_group = MLObject(id="g1", name=name, description=want.model_group_description)
    step = diff(want, _observed(open_group)).step("model_group", name)
    assert step is not None and step.action == "update"
    assert step.payload(GroupAccess).access == {"access_mode": "restricted", "backend_roles": [MODEL_USERS_ROLE]}
    restricted = MLObject(id="g1", name=name, description=want.model_group_description, access="restricted",
                          backend_roles=(MODEL_USERS_ROLE,))
    step = diff(want, _observed(restricted)).step("model_group", name)
    assert step is not None and step.action == "unchanged"
    # security off: access is not managed (ML Commons' access control needs the security plugin)
    plain = desired.desired_state(load_config(), clip)
    assert "plugins.ml_commons.model_access_control_enabled" not in plain.cluster_settings
    step = diff(plain, _observed(open_group)).step("model_group", name)
    assert step is not None and step.action == "unchanged"


def test_container_export_uses_the_same_secrets_and_names_the_service(tmp_path: Path) -> None:
    import yaml

    settings = load_config(run_dir=str(tmp_path / "run"), opensearch={"security": True})
    out = security.export_config(settings, tmp_path / "container", ["opensearch"])
    conf = yaml.safe_load((out / "opensearch.yml").read_text())
    assert conf["network.host"] == "0.0.0.0" and conf["plugins.security.ssl.http.enabled"] is True
    assert (out / "ca.pem").read_bytes() == (tmp_path / "run" / "certs" / "ca.pem").read_bytes()
    sans = load(out / "node.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"opensearch", "localhost"} <= set(sans.get_values_for_type(x509.DNSName))
    users = yaml.safe_load((out / "opensearch-security" / "internal_users.yml").read_text())
    creds = read_credentials(tmp_path / "run" / CREDENTIALS_FILE)
    assert bcrypt.checkpw(creds.password(SEARCH_USER).encode(), users[SEARCH_USER]["hash"].encode())
    if os.geteuid() == 0:  # the image's opensearch user (uid 1000) must be able to read its key
        assert os.stat(out / "node-key.pem").st_uid == security.CONTAINER_UID
