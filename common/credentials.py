"""The secrets of a secured deployment, generated once: OpenSearch users' passwords and the adapter's token.

They live in one JSON file beside the local stack's state (`<run_dir>/credentials.json`, mode 0600) so that every
tool on this machine (bootstrap, the supervisor, the clients, the viewer, the tests) can read what it needs without
anyone typing a password, and nobody else on the machine can. The file is written once, on the first secure start;
later starts reuse it, because the cluster keeps the users it was initialised with (the security index outlives a
restart) and the connectors carry the token that was current when the bootstrap last ran.

The user names are the roles the security plugin is configured with (localstack/security.py) and the defaults the
tools log in as: administration as `admin`, the search page as `vs_search`.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from common.errors import VisualSearchError

CREDENTIALS_FILE = "credentials.json"
ADMIN_USER = "admin"  # everything, the bootstrap included
INGEST_USER = "vs_ingest"  # writes into the images index through its pipeline; reads nothing
SEARCH_USER = "vs_search"  # searches the images index in every README mode; writes nothing
USERS = (ADMIN_USER, INGEST_USER, SEARCH_USER)
# The backend role that may use the managed models (ML Commons model access control through the model group).
MODEL_USERS_ROLE = "visual_search_model_users"


class CredentialsError(VisualSearchError):
    """The credentials file is missing, unreadable or incomplete; the message names it and how to get one."""


@dataclass(frozen=True)
class Credentials:
    passwords: dict[str, str]
    adapter_token: str

    def password(self, user: str) -> str:
        return self.passwords[user]

    def to_json(self) -> str:
        return json.dumps({"users": self.passwords, "adapter_token": self.adapter_token}, indent=1)


def generate() -> Credentials:
    """Fresh random secrets (URL-safe, so they survive shells, YAML and HTTP headers unquoted)."""
    return Credentials({user: secrets.token_urlsafe(24) for user in USERS}, secrets.token_urlsafe(32))


def read_credentials(path: Path) -> Credentials:
    try:
        data = json.loads(path.read_text())
        users = {str(k): str(v) for k, v in data["users"].items()}
        token = str(data["adapter_token"])
    except FileNotFoundError as exc:
        raise CredentialsError(f"no credentials at {path}: the first secure start (`make up SECURE=1`) writes them; "
                               "or set opensearch.username/password and adapter.token") from exc
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise CredentialsError(f"{path} is not a credentials file ({exc.__class__.__name__}: {exc})") from exc
    missing = [u for u in USERS if not users.get(u)]
    if missing or not token:
        raise CredentialsError(f"{path} lacks {', '.join(missing) or 'adapter_token'}; delete it together with the "
                               "secure node's data to start over")
    return Credentials(users, token)


def ensure_credentials(path: Path) -> Credentials:
    """The credentials in `path`, generated and written first if there are none (never overwritten).

    Written to a private temporary file (mode 0600 from the start: never readable by others, not even for an instant)
    that is then hard-linked into place, which fails if the file appeared meanwhile: of two processes that both find
    no file, one writes and the other reads the complete file the first wrote.
    """
    if path.exists():
        return read_credentials(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    creds = generate()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(creds.to_json())
        os.link(tmp, path)
    except FileExistsError:
        return read_credentials(path)
    finally:
        tmp.unlink(missing_ok=True)
    return creds
