"""Which vLLM model runner an engine uses: one setting, applied the same way by every engine.

vLLM 0.32 chooses between its V1 GPU model runner and the experimental Model Runner V2 from the
environment variable `VLLM_USE_V2_MODEL_RUNNER` (unset: V2 on CUDA whenever Triton imports). The
CPU runner that every CPU test exercises derives from V1, so the project pins V1 unless asked.
The variable must be set before the engine is built (vLLM reads it while building its config).
"""

from __future__ import annotations

import os

VLLM_MODEL_RUNNERS = ("v1", "v2", "auto")
ENV_NAME = "VLLM_USE_V2_MODEL_RUNNER"


def apply_model_runner(mode: str) -> None:
    """Set this process's environment so the next vLLM engine uses runner `mode` (v1, v2 or auto)."""
    if mode not in VLLM_MODEL_RUNNERS:
        raise ValueError(f"vLLM model runner '{mode}': use one of {', '.join(VLLM_MODEL_RUNNERS)}")
    if mode == "auto":
        os.environ.pop(ENV_NAME, None)  # vLLM's own choice
    else:
        os.environ[ENV_NAME] = "1" if mode == "v2" else "0"


def model_runner_env(mode: str) -> dict[str, str]:
    """The environment entries a child process (a Solver server) needs for runner `mode`."""
    if mode not in VLLM_MODEL_RUNNERS:
        raise ValueError(f"vLLM model runner '{mode}': use one of {', '.join(VLLM_MODEL_RUNNERS)}")
    return {} if mode == "auto" else {ENV_NAME: "1" if mode == "v2" else "0"}
