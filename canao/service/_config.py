"""The service's settings, and the checks made before it binds a socket."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from canao.errors import CanaoError

MIN_TOKEN_CHARS = 16  # a bearer token shorter than this is guessable; refuse it at start
# Study names follow the CLI's rule (canao.study.check_study_name); export identifiers are ours.
EXPORT_ID = re.compile(r"trial-(\d{1,9})")


class ServiceError(CanaoError, ValueError):
    """The service cannot start as asked (an unsafe bind, an unreadable token file)."""


@dataclass(frozen=True)
class ServiceConfig:
    """Where the service reads studies and keeps its files, and how it guards requests."""

    storage: str  # SQLAlchemy URL of the study database; workers it starts get the same one
    data_dir: Path  # uploads are not kept; artifacts/, exports/ and logs/ live here
    host: str = "127.0.0.1"
    port: int = 8787
    token: str | None = None  # with a token every request but /api/health needs it
    max_body_bytes: int = 1 << 20  # any request body over this is answered 413
    heartbeat_s: int = 30  # passed to the workers it starts (canao worker --heartbeat-s)
    grace_s: int = 300  # ... and --grace-s
    refresh_s: float = 2.0  # how often the Pareto page polls while workers run
    max_workers: int = 16  # per request, so one request cannot fork-bomb the machine

    @property
    def artifacts(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def exports(self) -> Path:
        return self.data_dir / "exports"

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token."""
    if token is None and not is_loopback(host):
        raise ServiceError(f"--host {host} is not a loopback address: binding it needs "
                           "--token-file (every request must then carry the token)")


def read_token(path: Path) -> str:
    """The bearer token in ``path`` (surrounding whitespace dropped)."""
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ServiceError(f"--token-file {path}: cannot be read: {e}") from e
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ServiceError(f"--token-file {path}: the token must be at least {MIN_TOKEN_CHARS} "
                           "characters without spaces (for example `openssl rand -hex 32`)")
    return token
