"""Checks that run before anything heavy starts, each problem said with its fix, all of them at once.

Building blocks for the run's preflight (`pipeline.preflight`), the evaluation CLI and the stage
scripts: is a model reachable (a local folder with config.json, tokenizer and weights, or a hub id
that resolves or is in the HF cache, with offline mode said plainly), is a hub dataset reachable or
cached, do the GPUs a plan names exist, is there free disk for what a run keeps. No torch import:
every check answers in seconds (hub requests have a timeout).

    python -m infra.preflight --model M [--model M2] [--file F] [--unless-done DIR]
    (exit 2 with every problem listed; used by scripts/question_generate.sh, question_evaluate.sh)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.cpu_kvcache import text_config

HUB_TIMEOUT_S = 10.0
HUB_PROBE_TIMEOUT_S = 3.0
EXIT_PREFLIGHT = 2
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Problem:
    """What is wrong, and how to fix it."""

    what: str
    fix: str


def format_problems(problems: Sequence[Problem], title: str = "preflight") -> str:
    lines = [f"{title}: {len(problems)} problem(s); nothing was started."]
    for i, p in enumerate(problems, 1):
        lines += [f"  {i}. {p.what}", f"     fix: {p.fix}"]
    return "\n".join(lines)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE / HF_DATASETS_OFFLINE) is set: no hub request."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    return any(os.environ.get(n, "").strip().lower() in _TRUE for n in names)


def offline_note() -> str:
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    set_ = [f"{n}={os.environ[n]}" for n in names if os.environ.get(n, "").strip().lower() in _TRUE]
    return f"the hub is off ({', '.join(set_)}): only local files and the HF cache are used"


def is_local_path(name: str) -> bool:
    """A filesystem path rather than a hub id (exists, or is spelled like a path)."""
    return os.path.exists(name) or name.startswith(("/", ".", "~")) or not _HUB_ID.match(name)


# ----------------------------------------------------------------------------- models


def check_model(model: str, role: str = "model") -> list[Problem]:
    """A local HF folder (config.json, tokenizer, weights) or a hub id that resolves or is cached."""
    if is_local_path(model):
        return _check_model_folder(Path(model).expanduser(), role)
    return _check_hub_repo(model, role, "model")


def _check_model_folder(path: Path, role: str) -> list[Problem]:
    fix = "give an HF model folder (config.json, tokenizer files, weights) or a hub id such as Qwen/Qwen3-4B-Base"
    if not path.exists():
        return [Problem(f"{role} '{path}': no such folder", fix)]
    if not path.is_dir():
        return [Problem(f"{role} '{path}' is a file, not a model folder", fix)]
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        missing.append(f"tokenizer files ({', '.join(_TOKENIZER_FILES)})")
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in path.iterdir()):
        missing.append("weights (*.safetensors / *.bin)")
    if missing:
        return [Problem(f"{role} '{path}' has no {', no '.join(missing)}", fix)]
    return []


def _hub_cached(repo: str, repo_type: str) -> bool:
    from huggingface_hub import constants

    folder = f"{repo_type}s--{repo.replace('/', '--')}"
    if (Path(constants.HF_HUB_CACHE) / folder / "snapshots").is_dir():
        return True
    if repo_type == "dataset":  # the datasets library's own cache (HF_DATASETS_CACHE)
        cache = os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets"
        return any(Path(cache).glob(repo.replace("/", "___") + "*"))
    return False


@functools.cache
def hub_unreachable() -> str | None:
    """Why the hub (HF_ENDPOINT) cannot be reached, from one TCP connection of at most
    HUB_PROBE_TIMEOUT_S (name resolution included); None when it answers. Asked once per process."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    outcome: dict[str, BaseException] = {}

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S).close()
        except OSError as e:
            outcome["error"] = e

    # A thread bounds the name lookup too, which socket timeouts do not cover.
    probe = threading.Thread(target=connect, name="hub-probe", daemon=True)
    probe.start()
    probe.join(HUB_PROBE_TIMEOUT_S + 0.5)
    if probe.is_alive():
        return f"{host}:{port} did not answer within {HUB_PROBE_TIMEOUT_S:g} s"
    if "error" in outcome:
        e = outcome["error"]
        return f"{host}:{port}: {getattr(e, 'strerror', None) or type(e).__name__}"
    return None


def probe_hub() -> str | None:
    """Before a run's first hub request: when the hub cannot be reached, say why once and put
    huggingface_hub (and so transformers) in offline mode for this process, so that no later call
    spends a minute in retries, each printing warnings. Returns the reason, or None."""
    if hub_offline():
        return None
    reason = hub_unreachable()
    if reason is not None:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True  # read by huggingface_hub and transformers at each call
    return reason


def hub_status(repo: str, repo_type: str = "model") -> tuple[str, str]:
    """("cached" | "found" | "offline" | "missing" | "gated" | "unreachable", detail)."""
    if _hub_cached(repo, repo_type):
        return "cached", ""
    if hub_offline():
        return "offline", offline_note()
    if (reason := hub_unreachable()) is not None:
        return "unreachable", reason
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    api = HfApi()
    info = api.model_info if repo_type == "model" else api.dataset_info
    try:
        info(repo, timeout=HUB_TIMEOUT_S)
    except GatedRepoError as e:
        return "gated", str(e).splitlines()[0]
    except RepositoryNotFoundError:
        return "missing", f"no {repo_type} '{repo}' on the hub"
    except Exception as e:  # connection refused, DNS, timeout, proxy: the hub cannot be reached
        return "unreachable", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return "found", ""


def _check_hub_repo(repo: str, role: str, repo_type: str) -> list[Problem]:
    status, detail = hub_status(repo, repo_type)
    local = "or point at a local folder that holds it"
    if status in ("cached", "found"):
        return []
    if status == "offline":
        return [
            Problem(
                f"{role} '{repo}' is not in the HF cache and {detail}",
                f"download it where the hub is reachable (`huggingface-cli download {repo}`), {local}, "
                "or unset HF_HUB_OFFLINE",
            )
        ]
    if status == "gated":
        return [
            Problem(f"{role} '{repo}' is gated: {detail}", "accept its licence on the hub and set HF_TOKEN")
        ]
    if status == "missing":
        return [Problem(f"{role} '{repo}': {detail}", f"check the spelling, {local}")]
    return [
        Problem(
            f"{role} '{repo}': the hub cannot be reached ({detail}) and it is not in the HF cache",
            f"check the network or proxy, {local}, or set HF_HUB_OFFLINE=1 with a cached copy",
        )
    ]


def model_parameters(model: str) -> int | None:
    """Parameter count of a model: exact from a local folder's safetensors headers, else estimated
    from its config.json (local, in the HF cache, or fetched from the hub); None when not at hand."""
    path = Path(model).expanduser()
    if path.is_dir():
        counted = _safetensors_parameters(path)
        if counted:
            return counted
    config = text_config(str(path)) if path.is_dir() else _cached_config(model)
    return _parameters_from_config(config) if config else None


def _safetensors_parameters(folder: Path) -> int | None:
    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with open(file, "rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(size))
        except (OSError, ValueError, struct.error):
            return None
        for name, tensor in header.items():
            if name != "__metadata__":
                count = 1
                for dim in tensor["shape"]:
                    count *= dim
                total += count
    return total or None


def _cached_config(repo: str) -> dict | None:
    if is_local_path(repo):
        return None
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    found = try_to_load_from_cache(repo, "config.json")
    if not isinstance(found, str) and hub_status(repo, "model")[0] == "found":
        try:  # a few KiB, and the run downloads it anyway
            found = hf_hub_download(repo, "config.json", etag_timeout=HUB_TIMEOUT_S)
        except Exception:  # unreachable, gated, missing: said by check_model; the size stays unknown
            return None
    if not isinstance(found, str):
        return None
    config = json.loads(Path(found).read_text())
    return config.get("text_config", config)


def _parameters_from_config(c: dict) -> int | None:
    """Decoder-only transformer: embeddings (x2 when untied) + per layer attention, MLP and norms."""
    try:
        h, layers, vocab = int(c["hidden_size"]), int(c["num_hidden_layers"]), int(c["vocab_size"])
        heads = int(c["num_attention_heads"])
        kv = int(c.get("num_key_value_heads") or heads)
        head_dim = int(c.get("head_dim") or h // heads)
        inter = int(c.get("intermediate_size") or 4 * h)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    attention = h * heads * head_dim * 2 + h * kv * head_dim * 2
    per_layer = attention + 3 * h * inter + 2 * h
    embeddings = vocab * h * (1 if c.get("tie_word_embeddings") else 2)
    return embeddings + layers * per_layer + h


# ----------------------------------------------------------------------------- devices and disk


def check_gpus(devices: Sequence[str]) -> list[Problem]:
    """The GPU ids a plan uses exist on this machine (counted with `nvidia-smi -L`)."""
    if not devices:
        return []
    cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    if shutil.which("nvidia-smi") is None:
        return [
            Problem(
                f"the plan uses GPUs {','.join(devices)} (CUDA_VISIBLE_DEVICES={cuda}) but this machine has "
                "no NVIDIA driver (nvidia-smi not found)",
                "unset CUDA_VISIBLE_DEVICES (or set it to '') to run on CPU, or run on a GPU node",
            )
        ]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return [Problem(f"nvidia-smi failed ({e})", "check the NVIDIA driver")]
    count = sum(line.startswith("GPU ") for line in out.splitlines())
    absent = [d for d in devices if d.isdigit() and int(d) >= count]
    if count == 0 or absent:
        return [
            Problem(
                f"the plan uses GPUs {','.join(devices)} but nvidia-smi lists {count}",
                "set CUDA_VISIBLE_DEVICES to GPUs that exist (or '' for CPU)",
            )
        ]
    try:
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return [Problem(f"nvidia-smi failed ({e})", "check the NVIDIA driver")]
    return check_cuda_driver(header, installed_torch_cuda())


def installed_torch_cuda() -> str | None:
    """The CUDA version torch was built for, read from torch/version.py without importing torch."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return None
    version_file = Path(spec.origin).parent / "version.py"
    return torch_cuda_of(version_file.read_text()) if version_file.is_file() else None


def torch_cuda_of(version_py: str) -> str | None:
    """`cuda` of torch/version.py text: "13.0" for `cuda: Optional[str] = '13.0'`, None for a CPU build."""
    m = re.search(r"^cuda(?:\s*:[^=\n]*)?\s*=\s*['\"]([\d.]+)['\"]", version_py, re.MULTILINE)
    return m.group(1) if m else None


def driver_cuda_version(nvidia_smi_output: str) -> tuple[int, int] | None:
    """Highest CUDA version the driver supports, from the header of plain `nvidia-smi` output."""
    m = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", nvidia_smi_output)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_cuda_driver(nvidia_smi_output: str, torch_cuda: str | None) -> list[Problem]:
    """The driver runs torch's CUDA: its CUDA major is at least torch's (minor versions are compatible).

    vllm 0.32.0 from PyPI is a CUDA 13 build (its metadata pins nvidia-cutlass-dsl[cu13]); a driver
    of an older CUDA major fails at the first kernel launch, after the models have loaded: this says
    so before anything starts.
    """
    driver = driver_cuda_version(nvidia_smi_output)
    if torch_cuda is None or driver is None:
        return []  # a CPU torch (CPU plan) or an unreadable header: nothing to compare
    torch_major = int(torch_cuda.split(".")[0])
    if driver[0] >= torch_major:
        return []
    return [
        Problem(
            f"the NVIDIA driver supports CUDA up to {driver[0]}.{driver[1]} (nvidia-smi) but the installed "
            f"torch is built for CUDA {torch_cuda}",
            f"update the NVIDIA driver to one that supports CUDA {torch_major} (CUDA 13: driver 580 or newer), "
            f"or install torch and vllm builds for CUDA {driver[0]} into .venv",
        )
    ]


def free_bytes(path: str | os.PathLike) -> int:
    """Free space on the filesystem that holds `path` (or would: the nearest existing parent)."""
    folder = Path(path).expanduser().absolute()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def human_bytes(n: float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def human_count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return str(int(n))


def check_files(paths: Iterable[str], role: str = "input file") -> list[Problem]:
    return [
        Problem(f"{role} '{p}' does not exist", "give the path of an existing file (or the stage folder)")
        for p in paths
        if not Path(p).expanduser().exists()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.preflight", description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="model folder or hub id (repeatable)")
    parser.add_argument("--file", action="append", default=[], help="an input file or folder that must exist")
    parser.add_argument(
        "--unless-done", help="a stage folder: when it holds a finished manifest, check nothing"
    )
    args = parser.parse_args(argv)
    if args.unless_done:
        manifest = Path(args.unless_done) / "manifest.json"
        if manifest.is_file() and json.loads(manifest.read_text()).get("status") == "done":
            return 0
    problems = [p for m in args.model for p in check_model(m)] + check_files(args.file)
    if problems:
        print(format_problems(problems), file=sys.stderr)
        return EXIT_PREFLIGHT
    return 0


if __name__ == "__main__":
    sys.exit(main())
