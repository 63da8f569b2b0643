"""A single-node run listens on loopback only (issue 20, item 8).

torch.distributed's env:// rendezvous starts rank 0's TCPStore on every interface whatever
MASTER_ADDR says, and gloo listens on the address the hostname resolves to; the engine's
`init_process_group` (what every FSDP worker calls) binds both to loopback. Checked on a real
2-rank gloo group: each rank lists the listening TCP sockets it holds (/proc/net/tcp and tcp6,
matched to its own file descriptors) while the group is up.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from verl.single_controller.worker import init_process_group, is_loopback
from verl.workers.local import run_local

_LISTEN = "0A"


def _hex_address(field: str) -> str:
    """'0100007F:1F90' (tcp) or 32 hex digits (tcp6) -> the address as text."""
    import ipaddress

    addr_hex = field.split(":")[0]
    raw = bytes.fromhex(addr_hex)
    # /proc writes each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def own_listening_addresses() -> list[str]:
    """Local addresses of the listening TCP sockets this process holds."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[3] == _LISTEN and cols[9] in inodes:
                    found.append(_hex_address(cols[1]))
    return found


def _probe() -> list[str]:
    import torch
    import torch.distributed as dist

    init_process_group("gloo", timeout=timedelta(minutes=2))
    dist.all_reduce(torch.ones(1))  # every connection of the group is up
    addresses = own_listening_addresses()
    dist.barrier()  # no rank tears its sockets down before the others have looked
    return addresses


def _is_loopback_address(addr: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(addr)
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1, a dual-stack socket's view
    return is_loopback(addr) or (mapped is not None and mapped.is_loopback)


def test_address_parsing() -> None:
    assert _hex_address("0100007F:1F90") == "127.0.0.1"
    assert _hex_address("00000000000000000000000001000000:1F90") == "::1"
    assert _is_loopback_address(_hex_address("0000000000000000FFFF00000100007F:0050"))
    assert not _is_loopback_address(_hex_address("00000000:1F90"))  # 0.0.0.0: every interface
    assert not _is_loopback_address(_hex_address("00000000000000000000000000000000:1F90"))


@pytest.mark.timeout(300)
def test_a_single_node_process_group_listens_on_loopback_only() -> None:
    per_rank = run_local(_probe, 2, timeout_s=240)
    print(f"listening sockets per rank: {per_rank}")
    assert per_rank[0], "rank 0 holds the store's listening socket"
    beyond = [(r, a) for r, addrs in enumerate(per_rank) for a in addrs if not _is_loopback_address(a)]
    assert beyond == [], f"listening beyond loopback: {beyond}"
