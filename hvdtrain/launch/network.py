"""Which address and interface the hosts of a job can really reach each other on.

Horovod's horovodrun picks the Gloo rendezvous address by interface *name*: the first
interface name every host has, then the launcher's own address on it. When the launcher is a
login node whose ``eth0`` is not on the compute network (or, here, the root namespace whose
``eth0`` is not the hosts' bridge), every rank dies with "HTTP GET request failed too many
times" (horovod/horovod#2568 and its cousins). What works instead is asking the routing table:
the launcher's source address towards the hosts is an address they can reach, and each host's
own interface towards that address is the one its Gloo must use. ``connect()`` on a UDP socket
consults the route and sends no packet.
"""

from __future__ import annotations

import fcntl
import ipaddress
import re
import socket
import struct
import subprocess
from collections.abc import Iterable
from pathlib import Path

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "127.0.0.1", "::1"})
SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address


def is_local(name: str, hostname: str | None = None) -> bool:
    """localhost, a loopback literal, or this machine's own hostname (no DNS lookup)."""
    hostname = (socket.gethostname() if hostname is None else hostname).lower()
    lowered = name.lower()
    return lowered in LOCAL_NAMES or lowered in (hostname, hostname.split(".")[0])


def route_source_address(host: str, port: int = 9) -> str | None:
    """This machine's address on the route towards ``host`` (None if it has no route)."""
    try:
        address = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((address, port))
            source: str = probe.getsockname()[0]
            return source
    except OSError:
        return None


def rendezvous_address(hosts: Iterable[str]) -> str | None:
    """The launcher's address every remote host reaches it by, when there is one."""
    remote = [h for h in hosts if not is_local(h)]
    sources = {route_source_address(h) for h in remote}
    if not remote or len(sources) != 1 or None in sources:
        return None
    return sources.pop()


def interface_addresses() -> dict[str, str]:
    """IPv4 address of every local interface that has one (stdlib ioctl, Linux)."""
    found: dict[str, str] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _index, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(sock.fileno(), SIOCGIFADDR,
                                     struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            found[name] = socket.inet_ntoa(packed[20:24])
    return found


_IP_ADDR = re.compile(r"\binet6? ([0-9A-Fa-f.:]+)")


def _ip_addr_output(timeout: float) -> str:
    try:
        out = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout if out.returncode == 0 else ""


def _proc_ipv6(path: Path = Path("/proc/net/if_inet6")) -> set[str]:
    found: set[str] = set()
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        hexits = line.split()[0] if line.split() else ""
        if len(hexits) == 32:
            found.add(str(ipaddress.IPv6Address(bytes.fromhex(hexits))))
    return found


def local_addresses(timeout: float = 5.0) -> frozenset[str]:
    """Every address of this machine's interfaces, IPv4 and IPv6, canonical. ``ip -o addr``
    lists secondary addresses too; the ioctl and ``/proc/net/if_inet6`` are added for hosts
    without iproute2 (a slim container). Each source is best effort: fewer addresses, never an
    exception."""
    found = {m.group(1) for m in _IP_ADDR.finditer(_ip_addr_output(timeout))}
    try:
        found.update(interface_addresses().values())
    except OSError:
        pass
    found.update(_proc_ipv6())
    canonical = set()
    for text in found:
        try:
            canonical.add(str(ipaddress.ip_address(text)))
        except ValueError:
            continue
    return frozenset(canonical)


def interface_towards(address: str) -> str | None:
    """The local interface on the route towards ``address``."""
    source = route_source_address(address)
    return next((name for name, ip in interface_addresses().items() if ip == source), None)


def interface_in(network: str) -> tuple[str, str] | None:
    """(interface, address) of this machine inside ``network`` (a CIDR), if any."""
    net = ipaddress.ip_network(network, strict=False)
    return next(((name, ip) for name, ip in interface_addresses().items()
                 if ipaddress.ip_address(ip) in net), None)
