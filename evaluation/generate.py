"""Generation for evaluation with vLLM: one in-process engine, or one engine per GPU (data parallel).

Sampling protocol:
    greedy  - temperature 0, one response per question.
    mean@k  - k *sampled* responses per question (SamplingParams n=k, temperature > 0). On CPU
              each request carries its own seed (base seed + item index * k), and vLLM gives the
              k children seeds seed+0..seed+k-1, so the k responses are distinct samples and the
              draw does not depend on batching. On GPU the engine's seed drives vLLM's batched
              sampler instead (a seeded request takes vLLM V1's slow per-row path): the k
              responses are still distinct draws, reproducible for one device plan.

Data parallel: `DataParallelEngine` starts one worker process per group of `tensor_parallel_size`
GPUs, each with CUDA_VISIBLE_DEVICES set before vLLM is imported, keeps the engines up for the
whole run, splits every batch of requests into contiguous shards and concatenates the answers in
order. On a CPU machine (and with one GPU group) a single in-process `LocalEngine` is used.

`LLM.generate` is not thread-safe: every call into one engine is serialised by a lock.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import traceback
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from infra.devices import device_groups, visible_gpus
from infra.processes import die_with_parent
from infra.shards import shard_bounds
from infra.vllm_engines import EngineSettings, make_llm

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingConfig:
    """How responses are drawn for one benchmark."""

    k: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.k > 1 and self.temperature <= 0:
            # k greedy copies are k identical answers, not mean@k.
            raise ValueError(f"mean@{self.k} needs sampling: temperature must be > 0")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @property
    def label(self) -> str:
        """ "greedy", or e.g. "mean@32 T=0.6 top_p=0.95" (the protocol shown in the report)."""
        if self.greedy:
            return "greedy"
        head = f"mean@{self.k}" if self.k > 1 else "sampled"
        text = f"{head} T={self.temperature:g}"
        if self.top_p < 1.0:
            text += f" top_p={self.top_p:g}"
        return text

    def request_seed(self, item_index: int) -> int | None:
        """Seed of one question's request (None when greedy); the k children use seed..seed+k-1."""
        return None if self.greedy else self.seed + item_index * self.k


@dataclass(frozen=True)
class EngineConfig:
    """The vLLM engine(s) of one evaluation run."""

    model: str
    tokenizer: str | None = None
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.85
    tensor_parallel_size: int = 1
    data_parallel_size: int | None = None  # None: every visible GPU group; 1 on CPU
    enforce_eager: bool = False
    seed: int = 0


@dataclass(frozen=True)
class GenRequest:
    """One question: prompt token ids, how many responses, and its seed."""

    prompt_ids: list[int]
    sampling: SamplingConfig
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Completion:
    """One response text with why it stopped and its length in tokens."""

    text: str
    finish_reason: str | None
    num_tokens: int


class Engine(Protocol):
    def generate(self, requests: list[GenRequest], use_tqdm: bool = True) -> list[list[Completion]]: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------- single engine


def _sampling_params(request: GenRequest, on_gpu: bool) -> Any:
    """vLLM's parameters of one request; on GPU without its seed (the engine's seed drives vLLM's
    batched sampler: `infra.vllm_engines.request_seeds` says why), so mean@k there is reproducible
    for one device plan, not per question."""
    from vllm import SamplingParams

    s = request.sampling
    stops: dict[str, Any] = dict(stop_token_ids=list(request.stop_token_ids), stop=list(request.stop))
    if s.greedy:
        return SamplingParams(n=1, temperature=0.0, max_tokens=s.max_tokens, **stops)
    return SamplingParams(
        n=s.k,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        max_tokens=s.max_tokens,
        seed=None if on_gpu else request.seed,
        **stops,
    )


class LocalEngine:
    """One in-process `vllm.LLM` (the only engine on CPU; one per worker process on GPUs)."""

    def __init__(self, config: EngineConfig) -> None:
        settings = EngineSettings(
            model=config.model,
            tokenizer=config.tokenizer,
            dtype=config.dtype,
            tensor_parallel_size=config.tensor_parallel_size,
            max_model_len=config.max_model_len,
            enforce_eager=True if config.enforce_eager else None,  # None: eager on CPU only
            gpu_memory_utilization=config.gpu_memory_utilization,
            seed=config.seed,
        )
        # mean@k needs per-request seeds: make_llm keeps prefills whole on CPU for them.
        self.on_gpu = bool(visible_gpus())
        self.llm = make_llm(settings, on_gpu=self.on_gpu)
        self.max_model_len: int = self.llm.llm_engine.model_config.max_model_len
        self._lock = threading.Lock()

    def generate(self, requests: list[GenRequest], use_tqdm: bool = True) -> list[list[Completion]]:
        """Responses for each request, in request order (k per request, ordered by sample index).

        A prompt that leaves no room for output in max_model_len is not sent; it gets k empty
        responses with finish_reason "prompt_too_long" (scored wrong, counted in the results).
        """
        from vllm import TokensPrompt

        results: list[list[Completion] | None] = [None] * len(requests)
        send = [i for i, r in enumerate(requests) if len(r.prompt_ids) < self.max_model_len]
        for i, r in enumerate(requests):
            if len(r.prompt_ids) >= self.max_model_len:
                results[i] = [Completion("", "prompt_too_long", 0)] * r.sampling.k
        if send:
            prompts = [TokensPrompt(prompt_token_ids=requests[i].prompt_ids) for i in send]
            params = [_sampling_params(requests[i], self.on_gpu) for i in send]
            with self._lock:
                outputs = self.llm.generate(prompts, params, use_tqdm=use_tqdm)
            for i, out in zip(send, outputs):
                samples = sorted(out.outputs, key=lambda o: o.index)
                results[i] = [Completion(o.text, o.finish_reason, len(o.token_ids)) for o in samples]
        return [r if r is not None else [] for r in results]

    def close(self) -> None:
        del self.llm


# ----------------------------------------------------------------------------- data parallel


def _worker_main(conn: Any, rank: int, devices: str | None, config: dict) -> None:
    """Worker process: pin its GPUs (None: a CPU engine), build an engine, answer request batches
    until told to stop."""
    die_with_parent()  # a SIGKILLed evaluation leaves no engine holding a GPU
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    try:
        engine = LocalEngine(EngineConfig(**config))
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", engine.max_model_len))
    while True:
        message = conn.recv()
        if message is None:
            break
        try:
            conn.send(("ok", engine.generate(message, use_tqdm=rank == 0)))
        except Exception:
            conn.send(("error", traceback.format_exc()))
    engine.close()


class DataParallelEngine:
    """One engine per GPU group in its own process; batches are split in order and merged in order."""

    def __init__(self, config: EngineConfig, groups: list[str | None]) -> None:
        ctx = mp.get_context("spawn")  # a fresh interpreter: CUDA is initialised only in the worker
        self._conns, self._procs = [], []
        for rank, devices in enumerate(groups):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, rank, devices, asdict(config)), daemon=False)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        try:
            for rank, conn in enumerate(self._conns):
                status, payload = conn.recv()
                if status != "ready":
                    raise RuntimeError(f"data-parallel worker {rank} failed to start:\n{payload}")
        except BaseException:
            self.close()
            raise
        logger.info("data-parallel generation on %d engines: %s", len(groups), groups)

    def generate(self, requests: list[GenRequest], use_tqdm: bool = True) -> list[list[Completion]]:
        bounds = shard_bounds(len(requests), len(self._conns))
        for conn, (start, end) in zip(self._conns, bounds):
            conn.send(requests[start:end])
        merged: list[list[Completion]] = []
        errors = []
        for rank, conn in enumerate(self._conns):
            status, payload = conn.recv()
            if status == "ok":
                merged.extend(payload)
            else:
                errors.append(f"worker {rank}:\n{payload}")
        if errors:
            raise RuntimeError("data-parallel generation failed:\n" + "\n".join(errors))
        return merged

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                logger.debug("worker pipe already closed")
        for proc in self._procs:
            proc.join(timeout=60)
            if proc.is_alive():
                logger.warning("data-parallel worker %s did not exit; terminating it", proc.pid)
                proc.terminate()
                proc.join(timeout=10)
        self._conns, self._procs = [], []


def make_engine(config: EngineConfig) -> Engine:
    """In-process engine on CPU or for one GPU group; one worker process per group otherwise.

    On CPU, `data_parallel_size` > 1 starts that many worker processes (the 8-GPU plan's shard count
    rehearsed without GPUs, scripts/rehearse.sh)."""
    if not visible_gpus():
        if (config.data_parallel_size or 1) > 1:
            return DataParallelEngine(config, [None] * config.data_parallel_size)
        return LocalEngine(config)
    groups = device_groups(None, config.tensor_parallel_size, config.data_parallel_size)
    if len(groups) == 1:
        return LocalEngine(config)
    return DataParallelEngine(config, groups)
