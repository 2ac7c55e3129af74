"""A simulated internet in Linux network namespaces: homes behind NAT routers on one WAN, for the NAT tests.

Every namespace's name starts with the run's prefix (``bnat<pid>``), so two
runs never meet and a run killed before its teardown is found and removed
by the next (:func:`remove_leftovers`). Addresses are private or TEST-NET
ones and no namespace has a link to the machine's own network, so nothing
sent inside can leave the machine. The topology, for homes ``a`` and ``b``::

                      <prefix>-wan   br0 203.0.113.1/24 (TEST-NET-3: the "internet";
                       |         |   coturn listens here; forwards nothing, and its default
                       |         |   route leads nowhere: a private address is lost)
       203.0.113.10 wan           wan 203.0.113.11
        <prefix>-a-r                <prefix>-b-r      routers: NAT out of "wan", forward
        lan br0 192.168.1.1/24      lan br0 192.168.2.1/24    LAN->WAN and replies only
          |          |                |
     <prefix>-a1  <prefix>-a2      <prefix>-b1        hosts: eth0 192.168.{i+1}.{10+j}/24,
     .1.10        .1.11            .2.10              default route via their router

Each link is a veth pair made straight into its two namespaces (no name is
ever taken in the machine's own namespace); loopback is up everywhere and
IPv6 is off, so the candidates a WebRTC peer gathers are its one IPv4
address. Home ``i`` (in the order given) is ``192.168.{i+1}.0/24`` behind
``203.0.113.{10+i}``.

NAT kinds, as the router's nftables ``masquerade`` out of its wan side:

* :data:`ENDPOINT_INDEPENDENT`: plain ``masquerade``. Linux keeps a flow's
  source port whenever it is free, so one LAN socket shows the same public
  address and port to every destination: what a STUN server sees is what a
  peer can send to (a "port-restricted cone": replies are let in only from
  where the socket sent to, as conntrack matches whole flows).
* :data:`SYMMETRIC`: ``masquerade fully-random``. Every new flow (every new
  destination) gets a random public port, so the address a STUN server saw
  is of no use to a peer; only a relay (TURN) joins two such homes.

A router drops what arrives unasked from the WAN for itself, as a home
router's firewall does. Without that, a peer's first check reaching a
router before its host has sent anything would leave a conntrack entry
whose tuple the host's own outgoing flow then clashes with, and Linux
would give that flow another port: endpoint-independent no more.

Each router also counts what it forwards into its LAN from the WAN, split
by whether it came from :data:`SERVER_ADDRESS` (STUN answers and relayed
data) or from anyone else (another home, directly): :meth:`Home.forwarded_in`.

Root (CAP_NET_ADMIN and CAP_SYS_ADMIN), ``ip`` (iproute2) and ``nft``
(nftables) are needed; :func:`unavailable` says what is missing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX_BASE = "bnat"
SERVER_ADDRESS = "203.0.113.1"
ENDPOINT_INDEPENDENT = "endpoint-independent"
SYMMETRIC = "symmetric"
_VOID_GATEWAY = "198.51.100.1"
_MASQUERADE = {ENDPOINT_INDEPENDENT: "masquerade", SYMMETRIC: "masquerade fully-random"}
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def unavailable() -> str | None:
    """Why namespaces cannot be made here (not root, no ip or nft, no namespace allowed), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/setup --test installs it)"
    probe = f"{PREFIX_BASE}{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
        subprocess.run(["ip", "netns", "exec", probe, "nft", "add", "table", "ip", "probe"], check=True,
                       capture_output=True, text=True, timeout=30)
    except subprocess.CalledProcessError as e:
        return f"cannot make a network namespace with nftables in it: {e.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def namespace_names() -> list[str]:
    listing = subprocess.run(["ip", "-j", "netns", "list"], check=True, capture_output=True, text=True).stdout
    return [entry["name"] for entry in json.loads(listing or "[]")]


def _kill_and_delete(name: str) -> None:
    """Kills what still runs in namespace ``name`` (our own processes: only we start any there), then deletes it."""
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def remove_leftovers() -> list[str]:
    """Deletes the namespaces of earlier runs whose process is gone (killed before their teardown); returns their names."""
    removed = []
    for name in namespace_names():
        match = re.fullmatch(rf"{PREFIX_BASE}(\d+)-.*", name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            _kill_and_delete(name)
            removed.append(name)
    return removed


@dataclass
class Namespace:
    """One network namespace; ``address`` is its address toward the WAN (a host's LAN one, a router's WAN one)."""

    name: str
    address: str
    _started: list[subprocess.Popen] = field(default_factory=list, repr=False)
    _executor: concurrent.futures.ThreadPoolExecutor | None = field(default=None, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    def enter(self) -> None:
        """Moves the calling thread (only it: setns(2) with CLONE_NEWNET is per thread) into this namespace."""
        with open(f"/run/netns/{self.name}") as f:
            if _libc.setns(f.fileno(), _CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"setns into {self.name}: {os.strerror(errno)}")

    def call(self, fn, *args):
        """``fn(*args)`` in a thread inside this namespace (the sockets it opens are the namespace's); its result."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(4, f"ns-{self.name}", initializer=self.enter)
        return self._executor.submit(fn, *args).result()

    async def inside(self, coroutine):
        """Awaits ``coroutine`` run on this namespace's own event loop (a thread inside it), from any loop.

        A client made there (Tornado's HTTP client, a websocket) reaches what
        a host of this namespace reaches, and stays open between calls.
        """
        if self._loop is None:
            loop = asyncio.new_event_loop()
            started = concurrent.futures.Future()

            def run() -> None:
                try:
                    self.enter()
                except OSError as e:
                    started.set_exception(e)
                    return
                asyncio.set_event_loop(loop)
                started.set_result(None)
                loop.run_forever()
                loop.close()

            threading.Thread(target=run, name=f"loop-{self.name}", daemon=True).start()
            started.result()
            self._loop = loop
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))

    def command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: list[str], timeout: float = 30, check: bool = True, input: str | None = None
            ) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv), capture_output=True, text=True, timeout=timeout, check=check,
                              input=input)

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """``argv`` started inside the namespace; stopped at the latest when the internet is torn down."""
        process = subprocess.Popen(self.command(argv), cwd=kwargs.pop("cwd", ROOT), **kwargs)
        self._started.append(process)
        return process

    def python(self, args: list[str], **kwargs) -> subprocess.Popen:
        """This interpreter (the project's virtualenv) inside the namespace, from the repository root."""
        return self.popen([sys.executable, *args], **kwargs)

    def stop_all(self) -> None:
        """Stops the processes started here, and the threads :meth:`call` and :meth:`inside` run in."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None
        for process in self._started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for process in self._started:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class Home:
    name: str
    nat: str
    router: Namespace
    hosts: list[Namespace]

    @property
    def public_address(self) -> str:
        return self.router.address

    def forwarded_in(self) -> dict[str, int]:
        """Bytes the router has forwarded from the WAN into the LAN: ``{"server": ..., "peers": ...}``."""
        out = {}
        for name in ("server", "peers"):
            listing = self.router.run(["nft", "-j", "list", "counter", "inet", "home", f"in_{name}"]).stdout
            (counter,) = [o["counter"] for o in json.loads(listing)["nftables"] if "counter" in o]
            out[name] = counter["bytes"]
        return out

    @contextlib.contextmanager
    def dropping_udp_from(self, address: str) -> Iterator[None]:
        """While inside, the router drops every UDP packet from ``address`` that it would let in: a direct path
        between homes that opens late, as it does when hole punching loses the race to a relay."""
        added = self.router.run(["nft", "--echo", "--handle", "insert", "rule", "inet", "home", "forward",
                                 "iifname", "wan", "ip", "saddr", address, "meta", "l4proto", "udp", "drop"]).stdout
        handle = re.search(r"# handle (\d+)", added).group(1)
        try:
            yield
        finally:
            self.router.run(["nft", "delete", "rule", "inet", "home", "forward", "handle", handle])


@dataclass(frozen=True)
class HomePlan:
    name: str
    nat: str
    hosts: int = 1


class Internet:
    """The topology of the module docstring for ``plans``; a context manager that tears it all down however it ends.

    ``internet.wan`` is the WAN namespace, ``internet.homes[name]`` each
    :class:`Home`. Teardown stops every process started through a
    namespace, kills whatever else still runs in one, and deletes them all.
    """

    def __init__(self, plans: list[HomePlan], prefix: str | None = None) -> None:
        self.prefix = prefix or f"{PREFIX_BASE}{os.getpid()}"
        self.plans = plans
        self.wan = Namespace(f"{self.prefix}-wan", SERVER_ADDRESS)
        self.homes: dict[str, Home] = {}
        self._made: list[str] = []

    def __enter__(self) -> Internet:
        try:
            self.build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()

    def _add_namespace(self, ns: Namespace, forward: bool) -> None:
        _ip("netns", "add", ns.name)
        self._made.append(ns.name)
        ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
                f"net.ipv4.ip_forward={int(forward)}"])
        if os.path.exists("/proc/sys/net/bridge"):
            # br_netfilter is loaded: keep bridged frames (a LAN's hosts talking to each other, routers on the
            # WAN's bridge) out of this namespace's IP firewall, as on a home switch.
            ns.run(["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0",
                    "net.bridge.bridge-nf-call-ip6tables=0", "net.bridge.bridge-nf-call-arptables=0"])
        _ip("-n", ns.name, "link", "set", "lo", "up")

    @staticmethod
    def _link(a: Namespace, a_name: str, b: Namespace, b_name: str) -> None:
        _ip("link", "add", "name", a_name, "netns", a.name, "type", "veth", "peer", "name", b_name, "netns", b.name)

    def build(self) -> None:
        remove_leftovers()
        self._add_namespace(self.wan, forward=False)
        # What the internet cannot route, it loses: the default route leads out of a veth whose other end takes
        # nothing (frames to a made-up neighbour), so a send to a private address succeeds and goes nowhere, as
        # on the real internet (coturn closes a whole TURN session on one send that fails).
        _ip("link", "add", "name", "void", "netns", self.wan.name, "type", "veth", "peer", "name", "void-end",
            "netns", self.wan.name)
        for device in ("void", "void-end"):
            _ip("-n", self.wan.name, "link", "set", device, "up")
        _ip("-n", self.wan.name, "neigh", "add", _VOID_GATEWAY, "lladdr", "02:00:00:00:00:01", "dev", "void",
            "nud", "permanent")
        _ip("-n", self.wan.name, "route", "add", "default", "via", _VOID_GATEWAY, "dev", "void", "onlink")
        _ip("-n", self.wan.name, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.wan.name, "addr", "add", f"{SERVER_ADDRESS}/24", "dev", "br0")
        _ip("-n", self.wan.name, "link", "set", "br0", "up")
        for i, plan in enumerate(self.plans):
            if plan.nat not in _MASQUERADE:
                raise ValueError(f"home {plan.name}: nat must be one of {sorted(_MASQUERADE)}, not {plan.nat!r}")
            router = Namespace(f"{self.prefix}-{plan.name}-r", f"203.0.113.{10 + i}")
            self._add_namespace(router, forward=True)
            self._link(self.wan, f"home{i}", router, "wan")
            _ip("-n", self.wan.name, "link", "set", f"home{i}", "master", "br0", "up")
            _ip("-n", router.name, "addr", "add", f"{router.address}/24", "dev", "wan")
            _ip("-n", router.name, "link", "set", "wan", "up")
            _ip("-n", router.name, "route", "add", "default", "via", SERVER_ADDRESS)
            lan = f"192.168.{i + 1}"
            _ip("-n", router.name, "link", "add", "br0", "type", "bridge")
            _ip("-n", router.name, "addr", "add", f"{lan}.1/24", "dev", "br0")
            _ip("-n", router.name, "link", "set", "br0", "up")
            hosts = []
            for j in range(plan.hosts):
                host = Namespace(f"{self.prefix}-{plan.name}{j + 1}", f"{lan}.{10 + j}")
                self._add_namespace(host, forward=False)
                self._link(router, f"lan{j}", host, "eth0")
                _ip("-n", router.name, "link", "set", f"lan{j}", "master", "br0", "up")
                _ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", "eth0")
                _ip("-n", host.name, "link", "set", "eth0", "up")
                _ip("-n", host.name, "route", "add", "default", "via", f"{lan}.1")
                hosts.append(host)
            router.run(["nft", "-f", "-"], input=_router_rules(plan.nat))
            self.homes[plan.name] = Home(plan.name, plan.nat, router, hosts)

    def namespaces(self) -> list[Namespace]:
        return [self.wan] + [ns for home in self.homes.values() for ns in (home.router, *home.hosts)]

    def teardown(self) -> None:
        for ns in self.namespaces():
            ns.stop_all()
        for name in reversed(self._made):
            _kill_and_delete(name)
        self._made.clear()


def _router_rules(nat: str) -> str:
    return f"""
table inet home {{
    counter in_server {{ }}
    counter in_peers {{ }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        iifname "wan" ip saddr {SERVER_ADDRESS} counter name in_server
        iifname "wan" ip saddr != {SERVER_ADDRESS} counter name in_peers
        ct state established,related accept
        iifname "br0" oifname "wan" accept
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state new drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" {_MASQUERADE[nat]}
    }}
}}
"""
