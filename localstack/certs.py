"""The project's own certificate authority and the certificates a secure local cluster uses.

Never the security plugin's demo certificates: those are public, so anyone could impersonate the node. Generated
once into `<run_dir>/certs/` and reused, so clients that trust `ca.pem` keep trusting every later start:

* `ca.pem` / `ca-key.pem`: the CA (10 years). Clients verify the cluster with `ca.pem`; its key signs the others.
* `node.pem` / `node-key.pem`: one certificate for every node (server and client use: HTTP and node-to-node TLS),
  with subject alternative names for `localhost`, 127.0.0.1 and ::1 plus any hosts asked for, so nodes added later
  on this machine use the same one; asking for a host it does not name reissues it (same CA, same DN).
* `admin.pem` / `admin-key.pem`: the client certificate whose DN the plugin treats as its super-admin
  (`plugins.security.authcz.admin_dn`): what `securityadmin.sh` needs to change the security configuration later.

Keys are RSA 2048 in unencrypted PKCS#8 PEM (what the plugin reads), written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ORGANIZATION = "visual-search"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 3650
LEAF_DAYS = 825  # the longest validity clients accept for a server certificate
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class CertPaths:
    """Where each PEM is; `node_dn` and `admin_dn` as the security plugin's settings name them."""

    dir: Path
    node_dn: str
    admin_dn: str

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca-key.pem"

    @property
    def node(self) -> Path:
        return self.dir / "node.pem"

    @property
    def node_key(self) -> Path:
        return self.dir / "node-key.pem"

    @property
    def admin(self) -> Path:
        return self.dir / "admin.pem"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin-key.pem"


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


NODE_NAME = _name("node", "nodes")
ADMIN_NAME = _name("admin", "admins")
CA_NAME = _name("visual-search local CA", "ca")


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _valid(cert: x509.Certificate | None, now: dt.datetime) -> bool:
    return cert is not None and cert.not_valid_before_utc <= now and cert.not_valid_after_utc - RENEW_BEFORE > now


def _sans(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _covers(cert: x509.Certificate, hosts: Sequence[str]) -> bool:
    try:
        present = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(v) for v in present.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in present.get_values_for_type(x509.IPAddress)}
    return all(str(ipaddress.ip_address(h)) in have if _is_ip(h) else h in have for h in hosts)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _issue(subject: x509.Name, key: rsa.RSAPrivateKey, ca_cert: x509.Certificate, ca_key: rsa.RSAPrivateKey,
           usages: list[x509.ObjectIdentifier], hosts: Sequence[str], now: dt.datetime) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _ensure_ca(paths: CertPaths, now: dt.datetime) -> tuple[x509.Certificate, rsa.RSAPrivateKey, bool]:
    """The CA, created when missing or expiring; True when it is new (every leaf must then be reissued)."""
    cert = _load_cert(paths.ca)
    if _valid(cert, now) and paths.ca_key.exists():
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey) and cert is not None
        return cert, key, False
    key = _new_key()
    cert = (x509.CertificateBuilder().subject_name(CA_NAME).issuer_name(CA_NAME).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(paths.ca_key, key)
    _write_cert(paths.ca, cert)
    return cert, key, True


def ensure_certs(directory: Path, hosts: Sequence[str] = ()) -> CertPaths:
    """The CA, node and admin certificates in `directory`, generated or renewed only where needed (missing,
    expiring within 30 days, the node's not naming every host in `LOCAL_HOSTS` + `hosts`, or a new CA)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(directory, NODE_NAME.rfc4514_string(), ADMIN_NAME.rfc4514_string())
    now = dt.datetime.now(dt.UTC)
    ca_cert, ca_key, new_ca = _ensure_ca(paths, now)
    node_hosts = [*LOCAL_HOSTS, *hosts]
    for subject, cert_path, key_path, usages, names in (
            (NODE_NAME, paths.node, paths.node_key,
             [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], node_hosts),
            (ADMIN_NAME, paths.admin, paths.admin_key, [ExtendedKeyUsageOID.CLIENT_AUTH], [])):
        cert = _load_cert(cert_path)
        if cert is not None and not new_ca and _valid(cert, now) and key_path.exists() \
                and (not names or _covers(cert, names)):
            continue
        key = _new_key()
        _write_key(key_path, key)
        _write_cert(cert_path, _issue(subject, key, ca_cert, ca_key, usages, names, now))
    return paths
