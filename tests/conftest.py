"""Shared fixtures: the embedded tiny model is built once per test run; everything stays offline."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

# Offline, loopback-only, CPU-friendly settings for every test (see CPU_STACK_NOTES in the docs).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("WANDB_MODE", "disabled")

# A shell that starts the suite in the background (`bash .ci/run &`) leaves SIGINT ignored, and an
# ignored signal stays ignored in every child: the Ctrl-C tests would see nothing. Python's own
# handler here makes the children start with the default again, as under a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder all test processes of this run share: under xdist (scripts/test.sh runs two) each
    worker has its own base temp folder beside the others; alone, the run's own."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return root / name


def _built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], str]) -> str:
    """build(folder) once per test run, whichever worker asks first; the others wait for it (a file
    lock), then reuse the folder (the builders write atomically and skip a finished folder)."""
    from filelock import FileLock

    folder = _shared_dir(tmp_path_factory, name)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        return build(folder)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Folder of the tiny Qwen3 model + tokenizer (HF format), built once per test run."""
    from model_zoo.tiny import build_tiny_model

    def build(folder: Path) -> str:
        path = folder / "tiny-qwen3"
        return str(path if (path / "config.json").is_file() else build_tiny_model(path, seed=0))

    return _built_once(tmp_path_factory, "tiny", build)


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo's base model, built once per test run: the tiny model taught the R-Zero output formats
    (its Challenger writes parseable questions, its Solver boxed answers), as main.sh builds it."""
    from pipeline.driver import ensure_demo_model

    return _built_once(tmp_path_factory, "demo", ensure_demo_model)


# The longest test files (minutes each on 2 cores), started first: scripts/test.sh hands whole files
# to two xdist workers in collection order (--dist loadfile --no-loadscope-reorder), and the longest
# first keeps one worker from finishing a long file alone at the end. Order only; nothing is skipped.
LONGEST_FIRST = [
    "test_main_demo.py",
    "test_rehearsal.py",
    "test_experiments_e2e.py",
    "test_real_model.py",
    "test_engine_e2e.py",
    "test_processes.py",
    "test_solver_service.py",
    "test_supervised.py",
    "test_eval_e2e.py",
    "test_engine_oracle.py",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fault-matrix",
        action="store_true",
        default=False,
        help="also run the full fault-injection matrix (tests marked `fault`, ~40 min on 2 cores)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fault: the full fault-injection matrix (issue 12); runs only with --fault-matrix"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
    if config.getoption("--fault-matrix"):
        return
    skip = pytest.mark.skip(reason="the full fault-injection matrix runs with --fault-matrix")
    for item in items:
        if item.get_closest_marker("fault") is not None:
            item.add_marker(skip)
