"""The GRPO loop on a Ray single controller.

`fit()` reads top to bottom as one RL step: generate -> reward (in a Ray actor, concurrently with)
old/ref log-probs -> advantages -> actor update -> weight sync into vLLM -> metrics -> checkpoint.
The driver holds no model; the workers hold the FSDP shards and the vLLM engines.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import ray

from verl.protocol import DataProto
from verl.single_controller.resource_pool import ResourcePool
from verl.single_controller.worker_group import RayWorkerGroup
from verl.trainer import balance, core_algos, finite
from verl.trainer.config import PPOConfig, save_config
from verl.trainer.metrics import data_metrics, throughput_metrics, timer
from verl.utils import checkpoint as ckpt
from verl.utils.dataset import PromptDataset, StatefulDataLoader, read_records
from verl.utils.device import resolve_device
from verl.utils.fs import atomic_write_json
from verl.utils.import_utils import load_function
from verl.utils.process_memory import peak_rss_mib
from verl.workers.reward.manager import RewardManager, absolute_function_spec

logger = logging.getLogger(__name__)


def init_ray(config: PPOConfig, n_workers: int) -> None:
    """Start a private Ray (on 127.0.0.1), or join the cluster that RAY_ADDRESS names.

    A cluster started on the node with `ray start` is never joined by accident: plain `ray.init()`
    would connect to it (its address file in /tmp/ray) and then refuse `num_cpus`; address="local"
    always starts this run's own. Multi-node runs join the cluster (RAY_ADDRESS, else "auto").
    """
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS") or config.trainer.nnodes > 1:
        ray.init(address=os.environ.get("RAY_ADDRESS") or "auto")
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Logical CPUs: one per worker, one for the reward actor, one spare; Ray does not pin cores.
    num_cpus = config.trainer.ray_num_cpus or max(os.cpu_count() or 1, n_workers + 2)
    # A small object store keeps CPU test machines' memory free; on a GPU node Ray sizes it (one
    # Solver-stage update payload alone is ~650 MB, more than a 512 MiB store holds).
    small_store = resolve_device(config.trainer.device) == "cpu"
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=True,
        **({"object_store_memory": 512 * 1024**2} if small_store else {}),
    )


def build_dataset(config: PPOConfig, tokenizer, files: str) -> PromptDataset:
    data = config.data
    if files:
        records, source = read_records(files), files
    else:
        fn = load_function(data.prompt_source)
        kwargs = dict(data.prompt_source_kwargs)
        kwargs.setdefault("num_prompts", data.rollout_batch_size * max(1, config.trainer.max_steps))
        records, source = fn(**kwargs), data.prompt_source
    return PromptDataset(
        records,
        tokenizer,
        data.prompt_key,
        data.answer_key,
        data.system_prompt,
        data.max_prompt_length,
        data.filter_overlong_prompts,
        source=source,
    )


class RayPPOTrainer:
    def __init__(self, config: PPOConfig) -> None:
        from transformers import AutoTokenizer

        self.config = config
        cfg = config
        self.device = resolve_device(cfg.trainer.device)
        self.output_dir = Path(cfg.trainer.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, self.output_dir / "config.yaml")  # what ran, next to what it produced
        model_cfg = cfg.worker.actor.model
        self.tokenizer = AutoTokenizer.from_pretrained(
            model_cfg.tokenizer_path or model_cfg.model_path, trust_remote_code=model_cfg.trust_remote_code
        )
        self.train_dataset = build_dataset(cfg, self.tokenizer, cfg.data.train_files)
        self.loader = StatefulDataLoader(
            self.train_dataset,
            cfg.data.rollout_batch_size,
            cfg.data.shuffle,
            cfg.data.seed,
            self.tokenizer.pad_token_id,
        )
        self.val_dataset = (
            build_dataset(cfg, self.tokenizer, cfg.data.val_files) if cfg.data.val_files else None
        )
        steps_per_epoch = self.loader.batches_per_epoch
        self.total_steps = (
            cfg.trainer.max_steps if cfg.trainer.max_steps > 0 else steps_per_epoch * cfg.trainer.total_epochs
        )
        self.world_size = cfg.trainer.nnodes * cfg.trainer.n_devices_per_node
        updates_per_step = (
            cfg.data.rollout_batch_size // cfg.worker.actor.prompts_per_update * cfg.worker.actor.ppo_epochs
        )
        self.total_updates = self.total_steps * updates_per_step

    # ---- set-up ---------------------------------------------------------------------------------

    def init_workers(self) -> None:
        from verl.workers.fsdp_workers import FSDPWorker

        cfg = self.config
        init_ray(cfg, self.world_size)
        self.pool = ResourcePool(
            cfg.trainer.nnodes, cfg.trainer.n_devices_per_node, use_gpu=self.device == "cuda"
        )
        role = "actor_rollout_ref" if cfg.algorithm.use_kl_loss else "actor_rollout"
        self.wg = RayWorkerGroup(
            self.pool,
            FSDPWorker,
            (cfg, role, self.total_updates),
            rollout_tp_size=cfg.worker.rollout.tensor_parallel_size,
        )
        infos = self.wg.init_model()
        logger.info("workers ready: %s", infos)
        from transformers import AutoConfig

        from verl.utils.flops_counter import peak_tflops

        self.model_config = AutoConfig.from_pretrained(
            cfg.worker.actor.model.model_path, trust_remote_code=cfg.worker.actor.model.trust_remote_code
        )
        self.peak_tflops = peak_tflops(infos[0]["device_name"]) if self.device == "cuda" else None
        reward_cfg = cfg.worker.reward
        reward_cfg.reward_function = absolute_function_spec(reward_cfg.reward_function)
        model_cfg = cfg.worker.actor.model
        self.reward_actor = ray.remote(num_cpus=reward_cfg.num_cpus)(RewardManager).remote(
            reward_cfg, model_cfg.tokenizer_path or model_cfg.model_path, model_cfg.trust_remote_code
        )

    def shutdown(self) -> None:
        if getattr(self, "wg", None) is not None:
            self.wg.shutdown()
            self.wg = None

    # ---- the loop -------------------------------------------------------------------------------

    def fit(self) -> list[dict]:
        from verl.utils.logger import Tracker

        cfg = self.config
        start_step = self._maybe_resume()
        tracker = Tracker(
            cfg.trainer.logger,
            str(self.output_dir),
            cfg.trainer.project_name,
            cfg.trainer.experiment_name,
            config=cfg.to_dict(),
            resume_step=start_step + 1,
        )
        history = []
        if cfg.trainer.val_before_train and self.val_dataset is not None and start_step == 0:
            tracker.log(self._validate(), step=0)
        print(
            f"[trainer] steps {start_step + 1}..{self.total_steps}, output in {self.output_dir}", flush=True
        )
        for step in range(start_step + 1, self.total_steps + 1):
            timings: dict[str, float] = {}
            self.wg.transfer_s.clear()
            with timer("step", timings):
                with timer("data", timings):
                    batch = self.loader.next_batch()
                batch.non_tensor_batch["uid"] = np.array(
                    [f"{step}-{i}" for i in range(len(batch))], dtype=object
                )
                # One sampling seed per prompt: a resumed run regenerates exactly the same responses.
                batch.non_tensor_batch["sample_seed"] = np.array(
                    [cfg.worker.rollout.seed * 1_000_003 + step * 100_003 + i for i in range(len(batch))],
                    dtype=object,
                )
                with timer("gen", timings):
                    batch = self.wg.generate_sequences(batch)
                balance_metrics = self._balance_batch(batch)
                if cfg.trainer.log_rollouts:  # written by the reward actor (verl/workers/reward/manager.py)
                    batch.meta_info["rollout_log"] = str(self.output_dir / "rollouts" / f"step_{step}.jsonl")
                reward_ref = self.reward_actor.compute_reward.remote(batch)  # runs during the log-prob passes
                with timer("old_log_prob", timings):
                    batch.union(self.wg.compute_log_prob(batch))
                if cfg.algorithm.use_kl_loss:
                    with timer("ref_log_prob", timings):
                        batch.union(self.wg.compute_ref_log_prob(batch))
                finite.check_log_probs(step, batch, self.output_dir)
                with timer("reward", timings):
                    token_scores, reward_metrics = ray.get(reward_ref)
                batch.batch["token_level_scores"] = token_scores
                with timer("adv", timings):
                    self._compute_advantages(batch)
                with timer("update_actor", timings):
                    actor_out = self.wg.update_actor(batch)
                # Before the sync and the checkpoint: the last checkpoint stays the last good state.
                finite.check_update(
                    step, actor_out.meta_info["metrics"], self.output_dir, batch.batch["token_level_scores"]
                )
                with timer("sync_weights", timings):
                    self.wg.sync_rollout_weights()
            metrics = {"step": step, "epoch": batch.meta_info.get("epoch", 0), **balance_metrics}
            metrics.update(actor_out.meta_info["metrics"])
            metrics.update(data_metrics(batch, reward_metrics, cfg.data.max_response_length))
            metrics.update({f"timing_s/{k}": v for k, v in timings.items()})
            metrics.update({f"timing_s/ray_{k}": v for k, v in self.wg.transfer_s.items()})
            metrics.update(
                throughput_metrics(batch, timings, self.world_size, self.model_config, self.peak_tflops)
            )
            if self._should(cfg.trainer.val_freq, step) and self.val_dataset is not None:
                metrics.update(self._validate())
            tracker.log(metrics, step=step)
            history.append(metrics)
            if self._should(cfg.trainer.save_freq, step) or step == self.total_steps:
                self._save(step)
        tracker.finish()
        self._record_memory()
        return history

    def _record_memory(self) -> None:
        """`<output_dir>/process_memory.json`: the peak RSS (MiB) of this driver, of each training
        rank's Ray worker (FSDP shard + rollout engine) and of the reward actor, read in each process."""
        workers = ray.get([w.__ray_call__.remote(lambda _self: peak_rss_mib()) for w in self.wg.workers])
        reward = ray.get(self.reward_actor.__ray_call__.remote(lambda _self: peak_rss_mib()))
        atomic_write_json(
            self.output_dir / "process_memory.json",
            {"driver": peak_rss_mib(), "workers": workers, "reward_actor": reward},
        )

    @staticmethod
    def _should(freq: int, step: int) -> bool:
        return freq > 0 and step % freq == 0

    def _balance_batch(self, batch: DataProto) -> dict[str, float]:
        """With `trainer.balance_batch`, reorder the rollout batch in place so that the DP split
        gives every rank about the same number of tokens (before the reward and the passes, as
        EasyR1 does); returns the per-rank token totals for the metrics ({} when off)."""
        if not self.config.trainer.balance_batch:
            return {}
        return balance.balance_batch(batch, self.world_size)

    def _compute_advantages(self, batch: DataProto) -> None:
        algo = self.config.algorithm
        estimator = core_algos.get_adv_estimator(algo.adv_estimator)
        advantages, returns = estimator(
            batch.batch["token_level_scores"],
            batch.batch["response_mask"],
            batch.non_tensor_batch["uid"],
            norm_adv_by_std=algo.norm_adv_by_std_in_grpo,
        )
        batch.batch["advantages"], batch.batch["returns"] = advantages, returns

    def _validate(self) -> dict[str, float]:
        assert self.val_dataset is not None
        from verl.utils.dataset import collate

        rows = [self.val_dataset[i] for i in range(len(self.val_dataset))]
        size = self.config.data.val_batch_size if self.config.data.val_batch_size > 0 else len(rows)
        scores: list[float] = []
        for start in range(0, len(rows), size):
            batch = collate(rows[start : start + size], self.tokenizer.pad_token_id)
            batch.meta_info["validate"] = True
            batch.non_tensor_batch["sample_seed"] = np.array(
                [7_919 + start + i for i in range(len(batch))], dtype=object
            )
            batch = self.wg.generate_sequences(batch)
            token_scores, _ = ray.get(self.reward_actor.compute_reward.remote(batch))
            scores.extend(token_scores.sum(-1).tolist())
        return {"val/reward_mean": float(np.mean(scores)) if scores else float("nan")}

    # ---- checkpoints ----------------------------------------------------------------------------

    def _save(self, step: int) -> None:
        cfg = self.config
        # A failed write (full disk, quota) removes the staged folder and says which step, why, and
        # which checkpoint a rerun resumes from; the previous checkpoint and the tracker stay intact.
        with ckpt.staged_checkpoint(self.output_dir, step) as staged:
            hf_dir = str(staged / "hf") if cfg.trainer.export_hf else None
            self.wg.save_checkpoint(str(staged), hf_dir)
            atomic_write_json(
                staged / "trainer_state.json",
                {
                    "step": step,
                    "dataloader": self.loader.state_dict(),
                    "total_steps": self.total_steps,
                    "saved_at": time.time(),
                },
            )
        final = ckpt.commit(self.output_dir, step, staged, cfg.trainer.save_limit)
        print(f"[trainer] checkpoint step {step} -> {final}", flush=True)

    def _maybe_resume(self) -> int:
        step = ckpt.latest_step(self.output_dir) if self.config.trainer.resume else None
        if step is None:
            return 0
        path = ckpt.step_dir(self.output_dir, step)
        state = json.loads((path / "trainer_state.json").read_text())
        self.wg.load_checkpoint(str(path))
        self.wg.sync_rollout_weights()
        self.loader.load_state_dict(state["dataloader"])
        print(f"[trainer] resumed from {path} (step {step})", flush=True)
        return step


def check_memory(config: PPOConfig) -> None:
    """On a GPU launch, print the memory plan first; trainer.memory_check=error refuses a plan
    with a phase that does not fit (warn: print it and go on; off: skip)."""
    if config.trainer.memory_check == "off" or resolve_device(config.trainer.device) != "cuda":
        return
    from verl.utils.memory_plan import plan_memory

    try:
        plan = plan_memory(config)
    except (FileNotFoundError, ValueError) as e:
        print(f"[trainer] memory plan unavailable: {e}", flush=True)
        return
    print(plan.format(), flush=True)
    if not plan.fits and config.trainer.memory_check == "error":
        raise RuntimeError(
            "the memory plan says this run does not fit (see above); trainer.memory_check=warn "
            "launches anyway"
        )


def run_training(config: PPOConfig) -> Path:
    """Validate, save the effective config, train, and return the HF folder of the last step."""
    config.validate()
    check_memory(config)
    out = Path(config.trainer.output_dir)
    trainer = RayPPOTrainer(config)
    try:
        trainer.init_workers()
        trainer.fit()
    finally:
        trainer.shutdown()
    last = ckpt.latest_step(out)
    hf = ckpt.step_dir(out, last) / "hf" if last is not None else None
    if hf is not None and hf.is_dir():
        print(f"[trainer] final HF model: {hf}", flush=True)
    return hf if hf is not None else out


__all__ = ["RayPPOTrainer", "init_ray", "run_training"]
