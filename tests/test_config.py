"""Config validation, and the server as a user starts it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import pytest

from harness.http import get_json
from harness.loopback import free_port
from harness.server_process import ServerProcess
from settings import ConfigError, load_settings, settings_from_dict

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"server": {"prot": 1}}, "unknown key 'server.prot'"),
        ({"servr": {}}, "unknown key 'servr'"),
        ({"server": {"port": "80"}}, "server.port: must be an integer"),
        ({"server": {"port": True}}, "server.port: must be an integer"),
        ({"server": {"port": 70000}}, "server.port: must be between 0 and 65535"),
        ({"server": {"trusted_proxies": "10.0.0.1"}}, "server.trusted_proxies: must be a list of strings"),
        ({"storage": {"backend": "s3"}}, "storage.backend: must be one of filesystem, pravega"),
        ({"storage": {"library": "/does/not/exist"}}, "storage.library: folder not found: /does/not/exist"),
        ({"storage": {"chunk_size": 0}}, "storage.chunk_size: must be greater than 0"),
        ({"peer": {"upstream": "ftp://x"}}, "peer.upstream: must be an http:// or https:// URL"),
        ({"peer": {"max_held_bytes": "10GiB"}}, "peer.max_held_bytes: must be an integer, not '10GiB'"),
        ({"peer": {"max_held_bytes": 0}}, "peer.max_held_bytes: must be greater than 0"),
        ({"peer": {"evict_idle_seconds": -1}}, "peer.evict_idle_seconds: must be greater than 0"),
        ({"peer": {"ice_servers": "stun:a.example"}}, "peer.ice_servers: must be a list of strings"),
        ({"peer": {"ice_servers": ["http://a.example"]}}, "peer.ice_servers: 'http://a.example' is not a STUN or TURN URL"),
        ({"peer": {"ice_servers": ["stun:a.example?transport=udp"]}}, "peer.ice_servers: 'stun:a.example?transport"),
        ({"peer": {"ice_servers": ["turn:a.example:99999"]}}, "peer.ice_servers: 'turn:a.example:99999' is not"),
        ({"peer": {"ice_servers": ["turn:a.example?transport=sctp"]}}, "peer.ice_servers: 'turn:a.example?transport"),
        ({"peer": {"ice_servers": ["turns:a.example:5349"]}}, "peer.turn_secret: must be set"),
        ({"peer": {"ice_servers": ["stun:a.example"], "turn_secret": "s"}}, "peer.turn_secret: set, but"),
        ({"peer": {"ice_servers": ["turn:a.example"], "turn_secret": "s", "turn_ttl": 0}},
         "peer.turn_ttl: must be greater than 0"),
        ({"server": []}, "server: must be a mapping"),
        ([], "config: the top level must be a mapping"),
    ],
)
def test_bad_config_names_the_key(raw, message, tmp_path):
    (tmp_path / "library").mkdir()
    with pytest.raises(ConfigError) as e:
        settings_from_dict(raw, base_dir=str(tmp_path))
    assert message in str(e.value)


def test_good_ice_servers_are_taken(tmp_path):
    (tmp_path / "library").mkdir()
    s = settings_from_dict({"peer": {"ice_servers": ["stun:stun.example.org", "stuns:[2001:db8::1]:5349",
                                                     "turn:turn.example.org:3478?transport=tcp", "turns:10.0.0.1"],
                                     "turn_secret": "s"}}, base_dir=str(tmp_path))
    assert len(s.peer.ice_servers) == 4 and s.peer.turn_ttl == 3600


def test_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "media").mkdir()
    (tmp_path / "c.yaml").write_text("storage:\n  library: media\n  scan_interval: 1\n")
    s = load_settings(str(tmp_path / "c.yaml"), {"server.port": 9999})
    assert s.storage.library == str(tmp_path / "media")
    assert s.storage.cache_dir == str(tmp_path / "var" / "cache")
    assert s.storage.scan_interval == 1.0 and s.server.port == 9999


def run_server(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "server.py"), *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("server:\n  port: many\n", "config error: server.port: must be an integer, not 'many'\n"),
        ("storage:\n  colour: red\n", "config error: unknown key 'storage.colour'\n"),
        ("storage: [unclosed\n", "config error: "),
        ("peer:\n  ice_servers: [\"stun:\"]\n",
         "config error: peer.ice_servers: 'stun:' is not a STUN or TURN URL (stun:HOST[:PORT], "),
    ],
)
def test_server_rejects_bad_config_with_one_line(tmp_path, text, expected):
    (tmp_path / "library").mkdir()
    (tmp_path / "c.yaml").write_text(text)
    result = run_server("--config", str(tmp_path / "c.yaml"))
    assert result.returncode == 2
    assert result.stderr.startswith(expected) and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_server_reports_missing_library(tmp_path):
    (tmp_path / "c.yaml").write_text("storage:\n  library: nowhere\n")
    result = run_server("--config", str(tmp_path / "c.yaml"))
    assert (result.returncode, result.stderr) == (2, f"config error: storage.library: folder not found: {tmp_path / 'nowhere'}\n")


def test_server_reports_a_taken_port_in_one_line(tmp_path, library):
    (tmp_path / "c.yaml").write_text(f"storage:\n  library: {library}\n  cache_dir: {tmp_path / 'cache'}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_server("--config", str(tmp_path / "c.yaml"), "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == f"cannot listen on 127.0.0.1:{port}: Address already in use"
    assert "Traceback" not in result.stderr


def test_server_runs_and_stops_on_sigterm(tmp_path, library):
    port = free_port()
    # The port on the command line, as an operator would give it; the config names it too, for the readiness check.
    server = ServerProcess(tmp_path, {"server": {"port": port},
                                      "storage": {"library": str(library), "cache_dir": str(tmp_path / "cache")}},
                           ready_path="/videos", launcher=[sys.executable, str(ROOT / "server.py"), "--port", str(port)])
    try:
        server.start().wait_until_serving(20)
        videos = asyncio.run(get_json(f"{server.url}/videos"))
        assert [v["id"] for v in videos] == ["alpha", "beta"]
    finally:
        server.stop(timeout=20)
    output = server.log_tail(lines=10_000)
    assert server.process.returncode == 0, output
    assert "Traceback" not in output


def test_workers_default_to_the_cpus_this_process_may_use_and_a_node_to_one(tmp_path):
    def workers(raw: dict) -> int:
        return settings_from_dict({"storage": {"library": str(tmp_path)}, **raw}).server.workers

    assert workers({}) == len(os.sched_getaffinity(0))
    assert workers({"server": {"workers": 3}}) == 3
    node = {"peer": {"upstream": "http://origin.example:8080"}}
    assert workers(node) == workers({**node, "server": {"workers": 1}}) == 1
    with pytest.raises(ConfigError, match=r"^server\.workers: a peer node \(peer\.upstream set\) runs one worker, not 2"):
        workers({**node, "server": {"workers": 2}})
