"""The Challenger's reward (RZERO_SPEC.md section 2): the frozen Solver's uncertainty on each
question minus the batch's repetition penalty.

Engine plug-in: `worker.reward.reward_function=rewards.challenger_reward:compute_challenger_reward`
(reward_type batch: the whole rollout batch, B = rollout_batch_size x n, in one call, which is the
batch the repetition penalty is defined over).

    p_hat_i   = size of the largest group of equivalent Solver answers / m
    penalty_i = |BLEU cluster of question i| / B
    paper:      valid -> max(0, (1 - 2|p_hat - 0.5|) - penalty);     invalid -> 0
    rzero_code: valid -> min(p_hat, 1 - p_hat) - penalty (no clamp); invalid -> -1 - penalty

Answers, validity, "same answer" and m follow the profile (`rewards.voting`, stage REWARD): ``paper``
extracts with `last_boxed`, groups with math-verify, m = solver_votes (box-less answers are no vote
but count); ``rzero_code`` extracts with mathruler (``"None"`` for a box-less answer is a vote),
groups with the "no " rule and mathruler's grade_answer, m = solver_votes as well (empty boxes join
no group but count, as in the authors' Solver server: 5 empty + 5 "7" is p_hat 0.5, unlike their
labelling), and accepts a Challenger output without a box as valid (answer "None") but not one
whose last box is empty.

The Solver is reached through the solver service (vLLM servers on 127.0.0.1) whose endpoints file
the stage wrote (`solver_endpoints_file`); the Challenger's own answer never enters p_hat.

Every item also carries the batch's wall time per phase (seconds, the same value on each item, so
the logged mean, `timing_s/reward_<phase>` in metrics.jsonl, is the batch's): `parse` (the
Challenger outputs), `request` (the B x m Solver answers: fan-out to the servers, their sampling,
the replies), `vote` (answer extraction and grouping in the grader pool), `penalty` (BLEU
clustering over the batch).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from rewards.answer_parsing import extract_answer, parse_challenger_output
from rewards.default_grader import get_default_pool
from rewards.grader import default_grader_workers
from rewards.repetition import repetition_penalty
from rewards.voting import REWARD, grader_backend, vote
from solver_service.client import SolverClient

_lock = threading.Lock()
_clients: dict[str, object] = {}


def _solver_client(endpoints_file: str, timeout_s: float, max_retries: int):
    """One client per endpoints file for the life of the reward actor (connections are reused)."""
    with _lock:
        if endpoints_file not in _clients:
            info = json.loads(Path(endpoints_file).read_text())
            _clients[endpoints_file] = SolverClient(
                info["endpoints"],
                info["model_name"],
                tokenizer=info["model"],
                timeout_s=timeout_s,
                max_retries=max_retries,
                max_model_len=info.get("max_model_len"),
            )
        return _clients[endpoints_file]


def uncertainty(p_hat: float, profile: str) -> float:
    """The profile's uncertainty term: paper 1 - 2|p - 0.5| (in [0, 1]); rzero_code min(p, 1 - p)."""
    if profile == "paper":
        return 1.0 - 2.0 * abs(p_hat - 0.5)
    if profile == "rzero_code":
        return min(p_hat, 1.0 - p_hat)
    raise ValueError(f"unknown profile '{profile}': use paper or rzero_code")


def challenger_scores(
    valid: list[bool], p_hat: list[float], penalty: np.ndarray, profile: str, penalty_weight: float = 1.0
) -> list[float]:
    """The per-profile formula (separate from I/O so it can be checked by hand).

    `penalty_weight` scales the repetition penalty: 0 is the paper's "w/o repetition penalty"
    ablation (paper: max(0, uncertainty); rzero_code: min(p_hat, 1 - p_hat), invalid -1)."""
    scores = []
    for ok, p, pen in zip(valid, p_hat, (penalty_weight * penalty).tolist()):
        u = uncertainty(p, profile)
        if profile == "paper":
            scores.append(max(0.0, u - pen) if ok else 0.0)
        else:
            scores.append(u - pen if ok else -1.0 - pen)
    return scores


def compute_challenger_reward(
    items: list[dict],
    solver_endpoints_file: str = "",
    profile: str = "paper",
    solver_votes: int = 10,
    solver_temperature: float = 1.0,
    solver_top_p: float = 1.0,
    solver_top_k: int = 40,
    solver_max_tokens: int = 4096,
    distance_threshold: float = 0.5,
    request_timeout_s: float = 900.0,
    max_retries: int = 3,
    grader_workers: int | None = None,
    penalty_weight: float = 1.0,
    **_: object,
) -> list[dict]:
    """Batch reward: `overall` plus `uncertainty` (the profile's term), `penalty`, `valid`, `p_hat`
    and `m` (the answers p_hat is a share of) for logging, and the parsed `question` and the Solver's
    extracted `solver_answers` (None: no answer) for the rollout log. `penalty_weight` scales the penalty in
    `overall` (0: the no-penalty ablation); `penalty` is logged unscaled, as it would apply."""
    uncertainty(0.5, profile)  # an unknown profile fails before the Solver is asked anything
    if not solver_endpoints_file:
        raise ValueError(
            "the Challenger reward needs worker.reward.reward_kwargs.solver_endpoints_file "
            "(written by the solver service; scripts/questioner_train.sh sets it)"
        )
    t0 = time.perf_counter()
    parsed = [parse_challenger_output(item["response"], profile) for item in items]
    valid_idx = [i for i, p in enumerate(parsed) if p.valid]
    p_hat = [0.0] * len(items)
    m = [0] * len(items)
    answers: list[list] = [[] for _ in items]  # each valid question's extracted Solver answers
    t_parsed = t_answered = t_voted = time.perf_counter()
    if valid_idx:
        client = _solver_client(solver_endpoints_file, request_timeout_s, max_retries)
        completions = client.answer(
            [parsed[i].question for i in valid_idx],
            n=solver_votes,
            temperature=solver_temperature,
            top_p=solver_top_p,
            top_k=solver_top_k,
            max_tokens=solver_max_tokens,
        )
        t_answered = time.perf_counter()
        for i, samples in zip(valid_idx, completions):
            answers[i] = [extract_answer(text, profile) for text in samples]
        pool = get_default_pool(grader_workers or default_grader_workers(), backend=grader_backend(profile))
        for i, result in zip(valid_idx, vote([answers[i] for i in valid_idx], profile, pool, stage=REWARD)):
            p_hat[i], m[i] = result.p_hat, result.n_counted
        t_voted = time.perf_counter()
    # An invalid output takes part in the clustering as an empty question (distance 1 to all), as
    # in the authors' code: a question block it may hold must not add to a valid question's cluster.
    questions = [p.question if p.valid else "" for p in parsed]
    penalty = repetition_penalty(questions, distance_threshold)
    t_penalty = time.perf_counter()
    timings = {
        "timing_s/reward_parse": t_parsed - t0,
        "timing_s/reward_request": t_answered - t_parsed,
        "timing_s/reward_vote": t_voted - t_answered,
        "timing_s/reward_penalty": t_penalty - t_voted,
    }
    valid = [p.valid for p in parsed]
    scores = challenger_scores(valid, p_hat, penalty, profile, penalty_weight)
    return [
        {
            "overall": score,
            "uncertainty": uncertainty(p, profile) if ok else 0.0,
            "penalty": float(pen),
            "valid": float(ok),
            "p_hat": p,
            "m": float(n),
            # not logged as metrics (not numbers); recorded per rollout with `trainer.log_rollouts`
            "question": question,
            "solver_answers": given,
            **timings,
        }
        for score, ok, p, n, pen, question, given in zip(
            scores, valid, p_hat, m, penalty.tolist(), questions, answers
        )
    ]
