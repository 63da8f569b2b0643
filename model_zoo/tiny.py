"""Build the embedded tiny Qwen3 model and tokenizer, offline and deterministically.

The project's tests and the CPU demo need a model that loads exactly like `Qwen/Qwen3-4B-Base`
(same architecture class, same chat markup, a real BPE tokenizer) but runs in milliseconds on two
cores and needs no download. This script makes one:

1. a byte-level BPE tokenizer trained with the `tokenizers` library on generated math-like text,
   with Qwen's special tokens and a Qwen-style chat template;
2. a randomly initialised `Qwen3ForCausalLM` (seeded), saved as safetensors.

Usage:
    python -m model_zoo.tiny --out DIR [--seed 0] [--vocab-size 2048]
    (or `python scripts/make_tiny_model.py ...`, the same command)

Importable from anywhere once the project is installed (`pip install -e .`):
    from model_zoo.tiny import build_tiny_model
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

from rzero.prompts import challenger_messages, solver_messages
from verl.utils.fs import UnsafeTargetError, add_overwrite_argument, atomic_dir

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

# Qwen-style ChatML template: every message as <|im_start|>role\ncontent<|im_end|>\n, then the
# assistant header when a generation prompt is asked for.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_WORDS = [
    "Let",
    "Find",
    "Compute",
    "Determine",
    "Suppose",
    "Prove",
    "what",
    "is",
    "the",
    "of",
    "a",
    "an",
    "and",
    "in",
    "to",
    "for",
    "with",
    "that",
    "integer",
    "integers",
    "number",
    "numbers",
    "positive",
    "real",
    "sum",
    "product",
    "value",
    "smallest",
    "largest",
    "how",
    "many",
    "ways",
    "triangle",
    "circle",
    "area",
    "perimeter",
    "radius",
    "angle",
    "probability",
    "expected",
    "digit",
    "digits",
    "prime",
    "remainder",
    "divided",
    "by",
    "equation",
    "solution",
    "solutions",
    "function",
    "polynomial",
    "root",
    "roots",
    "sequence",
    "term",
    "terms",
    "each",
    "such",
    "where",
    "answer",
    "final",
    "step",
    "reason",
    "think",
    "question",
    "box",
    "boxed",
    "therefore",
    "so",
    "we",
    "have",
    "then",
    "if",
    "only",
]
_LATEX = [
    r"\frac{1}{2}",
    r"\sqrt{2}",
    r"\pi",
    r"\cdot",
    r"\times",
    r"\le",
    r"\ge",
    r"x^2",
    r"\dfrac{3}{4}",
    "^",
]


def _random_expression(rng: random.Random) -> str:
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    op = rng.choice(["+", "-", "*", "/"])
    return f"{a} {op} {b}"


def _corpus_lines(rng: random.Random, n_lines: int) -> list[str]:
    """Generated math-like text: arithmetic, LaTeX fragments, R-Zero markup, chat markup."""
    lines = []
    for _ in range(n_lines):
        kind = rng.randrange(5)
        if kind == 0:
            expr = _random_expression(rng)
            lines.append(f"What is {expr}? The answer is \\boxed{{{rng.randint(0, 9999)}}}.")
        elif kind == 1:
            words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 16)))
            lines.append(f"<question>{words} {rng.choice(_LATEX)} {rng.randint(1, 100)}?</question>")
        elif kind == 2:
            lines.append(
                f"<think>{' '.join(rng.choice(_WORDS) for _ in range(8))}</think> "
                f"$x = {rng.choice(_LATEX)}$ so \\boxed{{{rng.choice(_LATEX)}}}"
            )
        elif kind == 3:
            digits = "".join(str(rng.randrange(10)) for _ in range(rng.randint(1, 12)))
            lines.append(f"{digits} {' '.join(str(rng.randrange(10)) for _ in range(6))}")
        else:
            lines.append(
                f"<|im_start|>user\n{' '.join(rng.choice(_WORDS) for _ in range(6))}<|im_end|>\n"
                f"<|im_start|>assistant\n{_random_expression(rng)} = {rng.randint(0, 99)}<|im_end|>"
            )
    return lines


def build_tokenizer(out_dir: str | os.PathLike, seed: int = 0, vocab_size: int = 2048):
    """Train the byte-level BPE tokenizer and save it (HF format) into `out_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(seed)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus_lines(rng, 6000), trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        # A Base model's convention (Qwen2.5 Base): EOS is <|endoftext|> in the tokenizer and the
        # generation config; <|im_end|> appears only in the chat template. So an engine that does not
        # apply the project's stop rule (verl.utils.stop_tokens) runs on past the end of the turn.
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:2] + SPECIAL_TOKENS[3:],
        model_max_length=4096,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(str(out_dir))
    return hf_tok


def _format_examples(rng: random.Random, n: int, role: str) -> list[list[dict[str, str]]]:
    """Chats that teach the R-Zero output formats: Challenger -> <question>..</question> \\boxed{},
    Solver -> <think>..</think> \\boxed{}. The Solver's answers are right only ~60% of the time, so a
    Solver sampled at temperature 1 disagrees with itself and pseudo-labels land across the p band."""
    chats = []
    for i in range(n):
        a, b = rng.randint(1, 60), rng.randint(1, 60)
        question = f"What is {a} + {b}?"
        if role == "challenger":
            reply = f"<question>{question}</question> \\boxed{{{a + b}}}"
            chats.append([*challenger_messages("default", i), {"role": "assistant", "content": reply}])
        else:
            answer = a + b if rng.random() < 0.6 else a + b + rng.choice([-2, -1, 1, 2])
            reply = f"<think>{a} plus {b}</think> The answer is \\boxed{{{answer}}}."
            chats.append([*solver_messages(question), {"role": "assistant", "content": reply}])
    return chats


def _assistant_loss(model, tokenizer, chats: list[list[dict[str, str]]]):
    """Next-token cross-entropy on the assistant turns only. The head runs only at those positions:
    on 2 CPU cores the full (tokens x vocab) head would cost most of the step."""
    import torch
    import torch.nn.functional as F

    rows, starts = [], []
    for chat in chats:
        prompt = tokenizer.apply_chat_template(
            chat[:-1], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        rows.append(tokenizer.apply_chat_template(chat, tokenize=True, return_dict=False))
        starts.append(len(prompt))
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    positions = torch.arange(width - 1).unsqueeze(0)
    # Position t predicts token t+1; right padding never affects earlier positions under causal attention.
    target_mask = (positions >= torch.tensor(starts).unsqueeze(1) - 1) & (
        positions < torch.tensor([len(r) for r in rows]).unsqueeze(1) - 1
    )
    hidden = model.model(input_ids=ids).last_hidden_state[:, :-1]
    logits = model.lm_head(hidden[target_mask])
    return F.cross_entropy(logits, ids[:, 1:][target_mask])


def teach_formats(model, tokenizer, steps: int, seed: int = 0, lr: float = 3e-3) -> float:
    """`steps` steps of next-token training on the assistant turns of `_format_examples` (4 Challenger
    and 8 Solver chats a step, each role padded separately). Deterministic for a given seed and
    thread count. Returns the final loss."""
    import torch

    rng = random.Random(seed + 1)
    torch.manual_seed(seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    loss_value = float("nan")
    for _ in range(steps):
        loss = _assistant_loss(model, tokenizer, _format_examples(rng, 4, "challenger"))
        loss = loss + _assistant_loss(model, tokenizer, _format_examples(rng, 8, "solver"))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loss_value = loss.item() / 2
    model.eval()
    return loss_value


def build_tiny_model(
    out_dir: str | os.PathLike,
    seed: int = 0,
    vocab_size: int = 2048,
    hidden_size: int = 128,
    num_layers: int = 2,
    format_steps: int = 0,
    overwrite: bool = False,
) -> Path:
    """Build tokenizer + Qwen3ForCausalLM into `out_dir` (atomically): randomly initialised, then,
    with `format_steps` > 0, taught the R-Zero output formats (the demo's base model, so that the
    demo's Challenger writes parseable questions and its Solver boxed answers).

    head_dim is 32: vLLM's CPU attention supports head sizes 32, 64, 80, ... (not 16).
    An existing `out_dir` is replaced only if the project wrote it (or is empty, or `overwrite`):
    see `verl.utils.fs.check_replaceable`. Returns the output folder.
    """
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    out = Path(out_dir)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        tok = build_tokenizer(tmp, seed=seed, vocab_size=vocab_size)
        eot = tok.convert_tokens_to_ids("<|endoftext|>")
        config = Qwen3Config(
            vocab_size=len(tok),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=hidden_size // 32,
            num_key_value_heads=max(1, hidden_size // 64),
            head_dim=32,
            max_position_embeddings=4096,
            rope_theta=10000.0,
            tie_word_embeddings=True,
            bos_token_id=eot,
            eos_token_id=eot,
            pad_token_id=eot,
        )
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config).to(torch.float32)
        final_loss = teach_formats(model, tok, format_steps, seed) if format_steps > 0 else None
        model.generation_config = GenerationConfig(
            bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, do_sample=False
        )
        model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "tiny_model.json").write_text(
            json.dumps(
                {
                    "seed": seed,
                    "vocab_size": vocab_size,
                    "hidden_size": hidden_size,
                    "layers": num_layers,
                    "format_steps": format_steps,
                    "format_loss": final_loss,
                }
            )
        )
        for f in tmp.iterdir():
            f.chmod(0o644)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="output folder (HF format)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument(
        "--format-steps",
        type=int,
        default=0,
        help="teach the R-Zero output formats for this many steps (the demo uses 300)",
    )
    add_overwrite_argument(parser)
    args = parser.parse_args()
    try:
        out = build_tiny_model(
            args.out,
            args.seed,
            args.vocab_size,
            args.hidden_size,
            args.layers,
            args.format_steps,
            overwrite=args.overwrite,
        )
    except UnsafeTargetError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"tiny Qwen3 model written to {out}")


if __name__ == "__main__":
    main()
