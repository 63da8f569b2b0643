"""Base class of the Ray workers: one process per rank, with the torch.distributed environment set."""

from __future__ import annotations

import ipaddress
import os
import socket
from datetime import timedelta


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago on `host` (the process group's store binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_loopback(host: str) -> bool:
    """`host` names this machine's loopback ("127.0.0.1", "::1", "localhost")."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def init_process_group(backend: str, timeout: timedelta) -> None:
    """`torch.distributed.init_process_group` from RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT.

    With a loopback MASTER_ADDR (a single-node run) nothing of the run listens beyond loopback:
    env:// rendezvous would start rank 0's TCPStore on every interface whatever MASTER_ADDR says
    (the address is only where the other ranks connect), so rank 0 binds the store's socket to
    MASTER_ADDR itself and hands it to the store (`master_listen_fd`); gloo (and NCCL's bootstrap)
    listen on the loopback interface unless GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME say otherwise.
    """
    import torch.distributed as dist

    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    if not is_loopback(host):
        dist.init_process_group(backend=backend, timeout=timeout)  # multi-node: env:// as usual
        return
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    listen_fd = None
    if rank == 0:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1" if host == "localhost" else host, port))
        sock.listen(max(128, world_size))
        listen_fd = sock.detach()  # the store owns the socket from here
    store = dist.TCPStore(
        host, port, world_size, is_master=rank == 0, timeout=timeout, master_listen_fd=listen_fd
    )
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


class Worker:
    """Reads RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT set by the worker group."""

    def __init__(self) -> None:
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    def setup_master(self, loopback: bool) -> tuple[str, int]:
        """Rank 0 picks the rendezvous address (loopback on a single node) and sets it for itself."""
        if loopback:
            host = "127.0.0.1"
        else:
            import ray

            host = ray.util.get_node_ip_address()
        port = free_port(host)
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = host, str(port)
        return host, port
