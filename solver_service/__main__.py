"""`python -m solver_service --model DIR --log-dir D --endpoints-file F`: the Solver service for shell
drivers (see solver_service.server). Stays in the foreground until SIGTERM/SIGINT, then stops its
servers and exits 0; exits 1 if the start fails or a server dies. F is written atomically once every
server is healthy and removed on exit.

The servers' API key comes from $RZERO_SOLVER_API_KEY, which must be set (to a random secret) in the
environment of this command and of its clients: the key is never written to F, a log or a command
line. Exits 2 when it is not set."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from infra.logs import setup_logging
from solver_service.server import API_KEY_ENV, SolverService, SolverServiceError
from verl.utils.fs import atomic_write_json

logger = logging.getLogger("solver_service")


class _Shutdown(Exception):
    """Raised in the main thread by the CLI's SIGTERM/SIGINT handler."""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m solver_service")
    p.add_argument("--model", required=True, help="model folder (or hub id) of the Solver")
    p.add_argument("--devices", default="", help="comma-separated CUDA device ids; empty = one server on CPU")
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--log-dir", required=True)
    p.add_argument("--endpoints-file", required=True, help="json written once all servers are healthy")
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--gpu-memory-utilization", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ready-timeout-s", type=float, default=600.0)
    p.add_argument("--stop-grace-s", type=float, default=30.0)
    p.add_argument("extra_args", nargs="*", help="more api_server flags, after `--`")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start the servers, write the endpoints file, stay in the foreground until SIGTERM/SIGINT.

    Exit code 0 after a signal, 1 if the start failed or a server died on its own."""
    setup_logging()
    args = _parse_args(argv)
    if not os.environ.get(API_KEY_ENV):
        # A key made up here could reach no client: the environment is the only channel it may take.
        logger.error(
            "set %s to a random secret in the environment of this command and of its clients, e.g. "
            "export %s=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
            API_KEY_ENV,
            API_KEY_ENV,
        )
        return 2
    endpoints_file = Path(args.endpoints_file)
    signalled = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if not signalled.is_set():  # a second signal must not interrupt the shutdown itself
            signalled.set()
            raise _Shutdown(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    service = SolverService(
        args.model,
        args.log_dir,
        [d.strip() for d in args.devices.split(",") if d.strip()] or None,
        tensor_parallel_size=args.tensor_parallel_size,
        served_model_name=args.served_model_name,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        enforce_eager=args.enforce_eager,
        gpu_memory_utilization=args.gpu_memory_utilization,
        seed=args.seed,
        ready_timeout_s=args.ready_timeout_s,
        stop_grace_s=args.stop_grace_s,
        extra_args=args.extra_args,
        install_signal_handlers=False,  # ours above: they turn the signal into a clean shutdown
    )
    try:
        with service:
            atomic_write_json(
                endpoints_file,
                {
                    "endpoints": service.endpoints,
                    "pids": service.pids,
                    "model_name": service.model_name,
                    "model": service.model,  # also the tokenizer the client applies the chat template with
                    "max_model_len": service.max_model_len,  # None: the client asks /v1/models
                    "log_dir": str(service.log_dir),
                    "owner_pid": os.getpid(),
                },
            )
            logger.info("endpoints written to %s; waiting for SIGTERM/SIGINT", endpoints_file)
            while True:
                service.check_alive()
                time.sleep(1.0)  # watch interval: a server that dies on its own ends the service
    except _Shutdown as e:
        logger.info("%s received: solver servers stopped", e)
        return 0
    except SolverServiceError as e:
        logger.error("%s", e)
        return 1
    finally:
        # A stale endpoints file would point the next reader at dead servers.
        endpoints_file.unlink(missing_ok=True)
    return 1  # unreachable: the loop above only ends by an exception


if __name__ == "__main__":
    sys.exit(main())
