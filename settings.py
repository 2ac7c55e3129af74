"""The server's configuration: a YAML file read into frozen dataclasses.

Each section of ``config.yaml`` is one dataclass below and each key one of its
fields, so adding a setting means adding a field (with its default) and a line
in the README. Loading checks every key and type and names the offending key
in a :class:`ConfigError`, which ``server.py`` turns into one line and exit
status 2.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import types
import typing
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import yaml

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.yaml")


class ConfigError(Exception):
    """A configuration problem; the message names the key or path at fault."""


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    cors_origin: str = "*"
    # Addresses of reverse proxies whose X-Forwarded-For is believed.
    trusted_proxies: tuple[str, ...] = ()
    # Seconds in-flight responses get to finish after SIGTERM.
    shutdown_grace: float = 5.0
    # Seconds a client may take to accept the next piece of a response body
    # before its connection is closed: a client that stops reading must not
    # hold a connection and its buffers for ever.
    stall_timeout: float = 30.0
    # Processes serving the port (see ops.workers); unset, one per CPU this
    # process may run on. A peer node runs one (its pieces and swarm are
    # per process): unset it is 1 there, set above 1 it is a config error.
    workers: int | None = None


@dataclass(frozen=True)
class StorageSettings:
    backend: str = "filesystem"
    library: str = "library"
    # Converted captions and other derived files live here.
    cache_dir: str = "var/cache"
    # How often the filesystem store looks for added or removed videos.
    scan_interval: float = 2.0
    # Largest single write to a client; bounds memory per stream.
    chunk_size: int = 1024 * 1024


@dataclass(frozen=True)
class PravegaSettings:
    controller_uri: str = "tcp://127.0.0.1:9090"
    scope: str = "binge"
    # Worker processes that do Pravega I/O for the server.
    workers: int = 2
    # Seconds a Pravega call may take before the request gets a 503.
    timeout: float = 5.0
    # Seconds a call no request waits on may take: a node creating, listing or
    # deleting its piece streams. A controller under load takes seconds to
    # make a stream, and a call cut short is killed with its worker and
    # begun again from scratch, so a bound as short as timeout could fail
    # every try for as long as the load lasts.
    metadata_timeout: float = 30.0
    # Seconds a video body already under way retries a read Pravega fails
    # (a segment store lost, its containers moving) before it is cut short.
    failover_timeout: float = 30.0
    # Seconds after which an instance that stopped heart-beating is dropped from presence.
    instance_timeout: float = 10.0


@dataclass(frozen=True)
class PresenceSettings:
    # Seconds between websocket pings; a client that has not answered one
    # within ping_timeout is closed (Tornado wants timeout <= interval).
    ping_interval: float = 10.0
    ping_timeout: float = 10.0
    # Broadcasts are at least this many seconds apart; the changes in
    # between go out as one.
    coalesce_interval: float = 0.02
    max_message_bytes: int = 4096
    messages_per_second: float = 20.0
    # WebRTC signals relayed between sockets (presence.signalling): a
    # signal may be larger than other messages (an offer with its ICE
    # candidates), and each socket may send this many a second (bursts of
    # as many), within messages_per_second.
    max_signal_bytes: int = 16384
    signals_per_second: float = 10.0
    # Bytes queued to one client before it is dropped as too slow.
    max_pending_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class PeerSettings:
    # URL of the origin or of another node; set, this server is a peer node.
    upstream: str | None = None
    # URL at which other nodes reach this one.
    public_url: str | None = None
    piece_size: int = 1024 * 1024
    # Bytes of verified pieces a node keeps (on disk or in its Pravega); past
    # it, whole videos are evicted, least recently read first (see peers.eviction).
    max_held_bytes: int = 10 * 1024**3
    # Seconds after its last read during which a video is never evicted, so
    # a player reading in bursts, or paused a moment, keeps its copy.
    evict_idle_seconds: float = 30.0
    # STUN and TURN servers (RFC 7064 and 7065 URLs) peers use to reach each
    # other behind NAT, handed out on GET /ice-servers (see peers.ice).
    ice_servers: tuple[str, ...] = ()
    # The TURN servers' shared secret (coturn's static-auth-secret, with
    # use-auth-secret): with it, this server hands out TURN credentials
    # good for turn_ttl seconds, so no long-term TURN password sits in a
    # node's config. Required by, and only with, turn: URLs.
    turn_secret: str | None = None
    turn_ttl: float = 3600.0


@dataclass(frozen=True)
class LimitsSettings:
    # Per client address (after server.trusted_proxies): video bodies being
    # sent at once, and presence websockets open at once. Generous, because
    # a household or office shares one address and a <video> may overlap
    # requests; they stop one host from taking every connection.
    streams_per_ip: int = 64
    sockets_per_ip: int = 32


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    pravega: PravegaSettings = field(default_factory=PravegaSettings)
    presence: PresenceSettings = field(default_factory=PresenceSettings)
    peer: PeerSettings = field(default_factory=PeerSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)


BACKENDS = ("filesystem", "pravega")


def load_settings(path: str | None = None, overrides: dict[str, object] | None = None) -> Settings:
    """Reads and validates ``path`` (default: config.yaml beside this file).

    ``overrides`` maps dotted keys (``"server.port"``) to values that win over
    the file, as the command line's ``--host`` and ``--port`` do. Relative paths
    in the file are taken from the file's own folder.
    """
    path = path or DEFAULT_CONFIG
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}".replace("\n", " ")) from None
    return settings_from_dict(raw or {}, base_dir=os.path.dirname(os.path.abspath(path)), overrides=overrides)


def settings_from_dict(
    raw: object, base_dir: str = ".", overrides: dict[str, object] | None = None
) -> Settings:
    if not isinstance(raw, dict):
        raise ConfigError("config: the top level must be a mapping of sections")
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        raw.setdefault(section, {})[key] = value
    sections = {}
    for f in dataclasses.fields(Settings):
        values = raw.pop(f.name, None)
        sections[f.name] = _build_section(f.name, f.default_factory, {} if values is None else values)
    if raw:
        raise ConfigError(f"unknown key '{sorted(raw)[0]}'")
    settings = Settings(**sections)
    return _checked(settings, base_dir)


def _build_section(name: str, cls: type, values: object):
    if not isinstance(values, dict):
        raise ConfigError(f"{name}: must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown key '{name}.{key}'")
    kwargs = {key: _coerce(f"{name}.{key}", hints[key], value) for key, value in values.items()}
    return cls(**kwargs)


def _coerce(key: str, hint: object, value: object):
    """Checks ``value`` against the field's type; ints are accepted for floats."""
    optional = isinstance(hint, types.UnionType) and type(None) in hint.__args__
    if optional:
        if value is None:
            return None
        (hint,) = [a for a in hint.__args__ if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: must be a list of strings")
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{key}: must be {_type_name(hint)}, not {value!r}")
    return value


def _type_name(hint: object) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))


def _checked(s: Settings, base_dir: str) -> Settings:
    def positive(key: str, value: float) -> None:
        if value <= 0:
            raise ConfigError(f"{key}: must be greater than 0, not {value}")

    if not 0 <= s.server.port <= 65535:
        raise ConfigError(f"server.port: must be between 0 and 65535, not {s.server.port}")
    if s.storage.backend not in BACKENDS:
        raise ConfigError(f"storage.backend: must be one of {', '.join(BACKENDS)}, not {s.storage.backend!r}")
    for section in (f.name for f in dataclasses.fields(s)):
        obj = getattr(s, section)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and f.name != "port":
                positive(f"{section}.{f.name}", value)
    if s.presence.ping_timeout > s.presence.ping_interval:
        raise ConfigError("presence.ping_timeout: must not exceed presence.ping_interval")
    library = os.path.normpath(os.path.join(base_dir, s.storage.library))
    if s.storage.backend == "filesystem" and not os.path.isdir(library):
        raise ConfigError(f"storage.library: folder not found: {library}")
    cache_dir = os.path.normpath(os.path.join(base_dir, s.storage.cache_dir))
    for key, url in (("peer.upstream", s.peer.upstream), ("peer.public_url", s.peer.public_url)):
        if url is not None and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc):
            raise ConfigError(f"{key}: must be an http:// or https:// URL, not {url!r}")
    _check_ice(s.peer)
    if s.peer.upstream is not None and _is_this_server(s.peer.upstream, s.server, s.peer.public_url):
        raise ConfigError(
            f"peer.upstream: {s.peer.upstream!r} is this server itself, a loop; "
            "set it to the origin's URL or another node's"
        )
    return dataclasses.replace(
        s, server=dataclasses.replace(s.server, workers=_workers(s)),
        storage=dataclasses.replace(s.storage, library=library, cache_dir=cache_dir),
    )


def _workers(s: Settings) -> int:
    """``server.workers`` as given, else the CPUs this process may use; a peer node's is 1."""
    if s.peer.upstream is None:
        return s.server.workers or len(os.sched_getaffinity(0))
    if s.server.workers not in (None, 1):
        raise ConfigError(
            f"server.workers: a peer node (peer.upstream set) runs one worker, not {s.server.workers}: "
            "its pieces and swarm are per process; leave it unset or 1"
        )
    return 1


# RFC 7064 (stun:, stuns:) and RFC 7065 (turn:, turns:, with ?transport=): host, optional port.
ICE_URL = re.compile(
    r"(?P<scheme>stuns?|turns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
    r"(?::(?P<port>[0-9]{1,5}))?(?P<query>\?transport=(?:udp|tcp))?\Z"
)


def _check_ice(peer: PeerSettings) -> None:
    turn = False
    for url in peer.ice_servers:
        match = ICE_URL.match(url)
        if (match is None or match["scheme"].startswith("stun") and match["query"]
                or match["port"] is not None and not 0 < int(match["port"]) <= 65535):
            raise ConfigError(
                f"peer.ice_servers: {url!r} is not a STUN or TURN URL "
                "(stun:HOST[:PORT], stuns:, turn:HOST[:PORT][?transport=udp|tcp], turns:)"
            )
        turn = turn or match["scheme"].startswith("turn")
    if turn and not peer.turn_secret:
        raise ConfigError("peer.turn_secret: must be set (to the TURN servers' static-auth-secret) "
                          "when peer.ice_servers lists a turn: or turns: URL")
    if peer.turn_secret is not None and not turn:
        raise ConfigError("peer.turn_secret: set, but peer.ice_servers lists no turn: or turns: URL")


# Names a server listening on every address, or on loopback, is reached at by itself.
WILDCARD_HOSTS = ("", "0.0.0.0", "::")
LOCALHOST = ("localhost", "127.0.0.1", "::1")


def _is_this_server(url: str, server: ServerSettings, public_url: str | None) -> bool:
    """Whether ``url`` is plainly this server's own address: its ``public_url``, or its host and port.

    Only what the config itself shows (no name is looked up): the hop guard
    (:mod:`peers.hops`) catches at run time whatever this cannot see.
    """

    def address(u: str) -> tuple[str, int | None]:
        parts = urlsplit(u)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            port = None
        return (parts.hostname or "").lower(), port

    host, port = address(url)
    if public_url is not None and (host, port) == address(public_url):
        return True
    if port != server.port:
        return False
    listening = server.host.lower().strip("[]")
    if host == listening or (host in LOCALHOST and listening in LOCALHOST):
        return True
    return listening in WILDCARD_HOSTS and (host in WILDCARD_HOSTS or _is_loopback(host))


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
