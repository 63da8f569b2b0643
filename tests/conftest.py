"""Shared fixtures: the embedded tiny model is built once per test run; everything stays offline."""

from __future__ import annotations

import os
import signal

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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Folder of the tiny Qwen3 model + tokenizer (HF format), built once per test run."""
    from model_zoo.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-qwen3", seed=0))


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo's base model, built once per test run: the tiny model taught the R-Zero output formats
    (its Challenger writes parseable questions, its Solver boxed answers), as main.sh builds it."""
    from pipeline.driver import ensure_demo_model

    return ensure_demo_model(tmp_path_factory.mktemp("demo"))


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
    if config.getoption("--fault-matrix"):
        return
    skip = pytest.mark.skip(reason="the full fault-injection matrix runs with --fault-matrix")
    for item in items:
        if item.get_closest_marker("fault") is not None:
            item.add_marker(skip)
