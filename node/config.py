"""config.toml -> frozen, typed settings.

Every error names the key it is about, e.g. ``[dicom].port: expected an
integer from 1 to 65535, got "abc"``, so that start-up can stop with one line.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_CONFIG = "DICOM_NODE_CONFIG"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"

# PS3.5 6.2: AE title, up to 16 characters of the default repertoire, no
# backslash and no control characters; leading/trailing spaces are not
# significant.
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


class ConfigError(ValueError):
    """A config value is missing or wrong; the message names the key."""


def valid_ae_title(value: str) -> bool:
    """True when *value* is a usable DICOM AE title."""
    return bool(_AE_RE.match(value)) and bool(value.strip())


@dataclass(frozen=True)
class DicomSettings:
    ae_title: str = "DICOM_NODE"
    host: str = "0.0.0.0"
    port: int = 11112
    allowed_calling_aets: tuple[str, ...] = ()
    max_pdu: int = 1_048_576
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 120.0
    fast_path: bool = True
    max_associations: int = 64


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str = ""
    max_body_bytes: int = 8 * 1024**3
    max_parts: int = 10_000
    # Origins whose pages may call the node (CORS); "*" for any; empty: no CORS headers.
    cors_origins: tuple[str, ...] = ()
    # Where `dicom-node viewer install` puts the OHIF viewer served at /viewer/.
    viewer_path: Path = Path("viewer")


@dataclass(frozen=True)
class StorageSettings:
    path: Path = Path("storage")
    # A path (SQLite) or a postgresql:// URL (kept as the string).
    database: Path | str = Path("storage/index.sqlite")
    fsync: bool = True
    transcode_to: str = ""  # empty: store as received; else a lossless transfer syntax UID
    # A SOP Instance UID held under another study/series/patient: "reject" it or "replace" (move) it.
    duplicates: str = "reject"
    # Below this much free space (storage or index) new data is refused and /health is degraded.
    min_free_bytes: int = 1024**3
    # A bounded store (node/cache/eviction.py): evict studies with a copy elsewhere; 0 = unbounded.
    max_bytes: int = 0
    max_age_days: float = 0.0  # 0 = keep forever
    database_connections: int = 50  # PostgreSQL: the most connections the node opens


@dataclass(frozen=True)
class ExportSettings:
    path: Path = Path("storage/zip")
    compression: int = 3
    workers: int = 2
    max_total_bytes: int = 20 * 1024**3
    max_age_days: float = 30.0


@dataclass(frozen=True)
class JobSettings:
    # A worker holds a job for this long without renewing it (it renews every
    # third of it); a killed node's jobs are taken over after it runs out.
    lease_seconds: float = 30.0
    # How often a node looks for jobs queued by another process (its own wake it at once).
    poll_seconds: float = 2.0
    send_workers: int = 2  # send jobs run at once by one node


@dataclass(frozen=True)
class CacheSettings:
    # C-FIND / QIDO toward the read-through remotes: "on-miss" (only when
    # nothing matches locally), "always" (merged with the local matches) or "never".
    query: str = "on-miss"
    # Seconds an upstream query may take; slower or unreachable remotes make the answer partial.
    query_timeout: float = 5.0


@dataclass(frozen=True)
class ServerSettings:
    # Processes serving DIMSE and HTTP on the same ports (node/workers/); 0: one per core.
    workers: int = 0

    def worker_count(self) -> int:
        """How many worker processes ``serve`` runs: ``workers``, or the number of cores for 0."""
        return self.workers or os.cpu_count() or 1


@dataclass(frozen=True)
class Remote:
    name: str
    ae_title: str
    host: str
    port: int
    accession_prefixes: tuple[str, ...] = ()
    retrieve: str = "move"
    forward: bool = False
    # Query (C-FIND / QIDO) and retrieve from this remote what the node does not hold.
    read_through: bool = False


@dataclass(frozen=True)
class Settings:
    dicom: DicomSettings = field(default_factory=DicomSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    jobs: JobSettings = field(default_factory=JobSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    remotes: tuple[Remote, ...] = ()
    source: Path | None = None

    def remote_by_ae(self, ae_title: str) -> Remote | None:
        """The remote whose AE title is *ae_title* (trailing spaces ignored)."""
        wanted = ae_title.strip()
        return next((r for r in self.remotes if r.ae_title == wanted), None)

    def remote_by_name(self, name: str) -> Remote | None:
        """The remote called *name* in the config."""
        return next((r for r in self.remotes if r.name == name), None)

    def calling_aets_accepted(self) -> tuple[str, ...]:
        """The calling AE titles associations are accepted from; empty means any.

        A non-empty ``allowed_calling_aets`` is extended with the AE title of
        every remote: a remote must always be able to call back, e.g. with the
        C-STOREs of a C-MOVE this node asked it for, or retrieval would be
        locked out by the list.
        """
        allowed = self.dicom.allowed_calling_aets
        if not allowed:
            return ()
        return tuple(dict.fromkeys([*allowed, *(r.ae_title for r in self.remotes)]))

    def remote_for_accession(self, accession: str) -> Remote | None:
        """The remote whose longest matching accession prefix starts *accession*."""
        best: tuple[int, Remote] | None = None
        for remote in self.remotes:
            for prefix in remote.accession_prefixes:
                if accession.startswith(prefix) and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), remote)
        return best[1] if best else None

    def read_through_remotes(self) -> tuple[Remote, ...]:
        """The remotes marked ``read_through``, in config order (the order answers are merged in)."""
        return tuple(r for r in self.remotes if r.read_through)


# -- value checkers: each returns the converted value or raises ConfigError --

Check = Callable[[str, Any], Any]


def _fail(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, got {value!r}")


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(key, "a string", value)
    return value


def _transcode_target(key: str, value: Any) -> str:
    """ "" or a lossless transfer syntax the node writes (converting at ingest must not lose data)."""
    from .transcode.syntaxes import LOSSLESS_TARGETS

    if value == "" or value in LOSSLESS_TARGETS:
        return value
    raise _fail(key, f'"" or a lossless transfer syntax UID ({", ".join(LOSSLESS_TARGETS)})', value)


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, "true or false", value)
    return value


def _int_range(lo: int, hi: int) -> Check:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise _fail(key, f"an integer from {lo} to {hi}", value)
        return value

    return check


def _database(key: str, value: Any) -> str:
    """A path, or a PostgreSQL URL naming a database (the password is never echoed)."""
    from .index.db import is_url, redact

    if not isinstance(value, str) or not value:
        raise _fail(key, "a path or a postgresql://user:password@host:port/db URL", value)
    if "://" not in value:
        return value
    if not is_url(value):
        raise ConfigError(f"{key}: expected a path or a postgresql:// URL, got {redact(value)!r}")
    parts = urlsplit(value)
    if not parts.path.strip("/"):
        raise ConfigError(f"{key}: the URL {redact(value)!r} names no database (postgresql://.../dbname)")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"{key}: the URL {redact(value)!r} has a bad port") from None
    return value


def _positive_number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _fail(key, "a positive number", value)
    return float(value)


def _non_negative_number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _fail(key, "a number, 0 or more", value)
    return float(value)


def _ae(key: str, value: Any) -> str:
    if not isinstance(value, str) or not valid_ae_title(value):
        raise _fail(key, "an AE title (1-16 characters, no backslash or control characters)", value)
    return value.strip()


def _ae_list(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _fail(key, "a list of AE titles", value)
    return tuple(_ae(f"{key}[{i}]", v) for i, v in enumerate(value))


def _prefix_list(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(key, "a list of non-empty strings", value)
    return tuple(value)


_ORIGIN_RE = re.compile(r"^https?://[^/\s?#]+$")


def _origin_list(key: str, value: Any) -> tuple[str, ...]:
    """CORS origins: "*" alone, or scheme://host[:port] values (what a browser sends as Origin)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(key, 'a list of origins such as "https://viewer.example.org", or ["*"]', value)
    for i, origin in enumerate(value):
        if origin != "*" and not _ORIGIN_RE.match(origin):
            raise _fail(f"{key}[{i}]", 'an origin "scheme://host[:port]" (no path) or "*"', origin)
    if "*" in value and len(value) > 1:
        raise _fail(key, '"*" alone (it already allows every origin)', value)
    return tuple(value)


def _choice(*choices: str) -> Check:
    def check(key: str, value: Any) -> str:
        if value not in choices:
            raise _fail(key, " or ".join(f'"{c}"' for c in choices), value)
        return value

    return check


_port = _int_range(1, 65535)

_SECTIONS: dict[str, tuple[type, dict[str, Check]]] = {
    "dicom": (
        DicomSettings,
        {
            "ae_title": _ae,
            "host": _string,
            "port": _port,
            "allowed_calling_aets": _ae_list,
            "max_pdu": _int_range(0, 2**32 - 1),
            "acse_timeout": _positive_number,
            "dimse_timeout": _positive_number,
            "network_timeout": _positive_number,
            "fast_path": _bool,
            "max_associations": _int_range(1, 1000),
        },
    ),
    "http": (
        HttpSettings,
        {
            "host": _string,
            "port": _port,
            "token": _string,
            "max_body_bytes": _int_range(1, 2**62),
            "max_parts": _int_range(1, 10**9),
            "cors_origins": _origin_list,
            "viewer_path": _string,
        },
    ),
    "storage": (
        StorageSettings,
        {
            "path": _string,
            "database": _database,
            "fsync": _bool,
            "database_connections": _int_range(1, 10_000),
            "transcode_to": _transcode_target,
            "duplicates": _choice("reject", "replace"),
            "min_free_bytes": _int_range(0, 2**62),
            "max_bytes": _int_range(0, 2**62),
            "max_age_days": _non_negative_number,
        },
    ),
    "export": (
        ExportSettings,
        {
            "path": _string,
            "compression": _int_range(0, 9),
            "workers": _int_range(1, 64),
            "max_total_bytes": _int_range(0, 2**62),
            "max_age_days": _positive_number,
        },
    ),
    "jobs": (
        JobSettings,
        {
            "lease_seconds": _positive_number,
            "poll_seconds": _positive_number,
            "send_workers": _int_range(1, 64),
        },
    ),
    "cache": (
        CacheSettings,
        {
            "query": _choice("on-miss", "always", "never"),
            "query_timeout": _positive_number,
        },
    ),
    "server": (ServerSettings, {"workers": _int_range(0, 256)}),
}

_REMOTE_KEYS: dict[str, Check] = {
    "name": _string,
    "ae_title": _ae,
    "host": _string,
    "port": _port,
    "accession_prefixes": _prefix_list,
    "retrieve": _choice("move", "get"),
    "forward": _bool,
    "read_through": _bool,
}
_REMOTE_REQUIRED = ("name", "ae_title", "host", "port")
_PATH_KEYS = {("storage", "path"), ("storage", "database"), ("export", "path"), ("http", "viewer_path")}


def known_keys() -> dict[str, tuple[str, ...]]:
    """Every key a config file may hold, by section; ``"remotes"`` for a ``[[remotes]]`` table."""
    keys = {name: tuple(checks) for name, (_, checks) in _SECTIONS.items()}
    keys["remotes"] = tuple(_REMOTE_KEYS)
    return keys


def _section(name: str, raw: Any, base: Path) -> Any:
    cls, checks = _SECTIONS[name]
    if not isinstance(raw, dict):
        raise _fail(f"[{name}]", "a table", raw)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in checks:
            raise ConfigError(f"[{name}].{key}: unknown key (known: {', '.join(checks)})")
        values[key] = checks[key](f"[{name}].{key}", value)
        if (name, key) in _PATH_KEYS and "://" not in values[key]:
            values[key] = (base / values[key]).resolve()
    obj = cls(**values)
    for name_, key in _PATH_KEYS:
        if name_ == name and key not in values:
            object.__setattr__(obj, key, (base / getattr(obj, key)).resolve())
    return obj


def _remotes(raw: Any, own_ae: str) -> tuple[Remote, ...]:
    if not isinstance(raw, list):
        raise _fail("[[remotes]]", "an array of tables", raw)
    remotes: list[Remote] = []
    for i, item in enumerate(raw):
        where = f"[[remotes]][{i}]"
        if not isinstance(item, dict):
            raise _fail(where, "a table", item)
        values: dict[str, Any] = {}
        for key, value in item.items():
            if key not in _REMOTE_KEYS:
                raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(_REMOTE_KEYS)})")
            values[key] = _REMOTE_KEYS[key](f"{where}.{key}", value)
        for key in _REMOTE_REQUIRED:
            if key not in values:
                raise ConfigError(
                    f"{where}.{key}: missing (every remote needs {', '.join(_REMOTE_REQUIRED)})"
                )
        remote = Remote(**values)
        if any(r.ae_title == remote.ae_title for r in remotes):
            raise ConfigError(f"{where}.ae_title: duplicate AE title {remote.ae_title!r}")
        if remote.ae_title == own_ae:
            raise ConfigError(f"{where}.ae_title: {remote.ae_title!r} is this node's own AE title")
        if any(r.name == remote.name for r in remotes):
            raise ConfigError(f"{where}.name: duplicate remote name {remote.name!r}")
        remotes.append(remote)
    return tuple(remotes)


def parse(data: dict[str, Any], base: Path, source: Path | None = None) -> Settings:
    """Build settings from a parsed TOML document; relative paths are taken from *base*."""
    for key in data:
        if key not in _SECTIONS and key != "remotes":
            raise ConfigError(f"[{key}]: unknown section (known: {', '.join(_SECTIONS)}, remotes)")
    sections = {name: _section(name, data.get(name, {}), base) for name in _SECTIONS}
    remotes = _remotes(data.get("remotes", []), sections["dicom"].ae_title)
    return Settings(**sections, remotes=remotes, source=source)


def load(path: str | os.PathLike[str] | None = None) -> Settings:
    """Load the config named by *path*, else by $DICOM_NODE_CONFIG, else the embedded default."""
    chosen = Path(path or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG)
    try:
        with chosen.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"{chosen}: config file not found (write one with `dicom-node init DIR`, "
            "then pass --config DIR/config.toml)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{chosen}: not valid TOML ({exc})") from None
    return parse(data, chosen.resolve().parent, source=chosen.resolve())
