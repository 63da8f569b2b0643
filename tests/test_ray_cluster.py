"""A Ray cluster already running on the node (`ray start`): a stage starts its own private Ray unless
RAY_ADDRESS names a cluster, and then joins that one (verl/trainer/ray_trainer.py init_ray)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).parent / "ray"

PROBE = """
import json, ray
from verl.trainer.config import CONFIG_DIR, load_config
from verl.trainer.ray_trainer import init_ray
config = load_config([f"config={CONFIG_DIR / 'toy.yaml'}", "trainer.device=cpu", "trainer.ray_num_cpus=3"])
init_ray(config, n_workers=1)
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "cpus": ray.cluster_resources().get("CPU")}))
ray.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def running_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """`ray start --head` with 1 CPU in its own process group (stopped by killing that group, never
    with `ray stop`, which would stop every Ray of the machine)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("ray_start") / "ray_start.log"
    with log.open("w") as out:
        head = subprocess.Popen(
            [str(RAY), "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
             "--include-dashboard=false", "--node-ip-address=127.0.0.1", "--disable-usage-stats"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():  # wait for readiness, as ray start reports it
            assert head.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "ray start did not come up in 120 s"
            time.sleep(0.5)
        yield port
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)


def _probe(env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")} | env_extra
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_stage_starts_its_own_ray_beside_a_running_cluster(running_cluster: int) -> None:
    own = _probe({})
    assert own["cpus"] == 3  # trainer.ray_num_cpus: a cluster of its own (joining would have raised)
    assert not own["gcs"].endswith(f":{running_cluster}")


def test_ray_address_joins_the_named_cluster(running_cluster: int) -> None:
    # `ray start` (Ray 2.60) turns token authentication on; a client joins with RAY_AUTH_MODE=token
    # (the token is in ~/.ray/auth_token), as a user would export it.
    joined = _probe({"RAY_ADDRESS": f"127.0.0.1:{running_cluster}", "RAY_AUTH_MODE": "token"})
    assert joined["gcs"].endswith(f":{running_cluster}") and joined["cpus"] == 1
