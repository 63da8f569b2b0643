"""No public function of the production code is reachable only from tests.

A function that production never calls is dead code, and a test of it guards nothing that runs. The
scan reads every production module git tracks (ast): a public top-level function, class or method
counts as used when its name occurs anywhere in production code (an identifier, an attribute, an
import, a string such as a config key) besides its own definition, or in the shell scripts, configs
or pyproject.toml. Name matching is loose (another function of the same name counts as a use), so a
miss is possible, a false alarm is not: whatever it reports is referenced nowhere.

Not reported: functions registered under a name by a `register_*(...)` decorator (chosen by a config
value, e.g. the advantage estimators), and the test seams and library callbacks below, each with the
reason it exists. Docstrings do not count as uses.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = (
    "verl",
    "training",
    "question_generate",
    "question_evaluate",
    "evaluation",
    "rewards",
    "solver_service",
    "model_zoo",
    "infra",
    "rzero",
    "pipeline",
    "scripts",
    "analysis",
)
# Observers and oracles that production does not call on purpose: tests reach the live object
# through them. Each entry must stay unreferenced in production (else it leaves this list).
TEST_SEAMS = {
    "FSDPWorker.score_with_rollout": "vLLM's log-probs of a sequence on the live rollout, the oracle "
    "of the FSDP log-probs (test_engine_e2e, test_rollout_sleep, test_real_model)",
    "FSDPWorker.full_logits": "the FSDP model's full logits on the live worker (test_engine_e2e)",
    "GraderPool.worker_pids": "the live pool's worker PIDs, for the hang and SIGKILL tests",
    "GraderPool.worker_states": "which worker is busy, for the hang and SIGKILL tests",
    "grpo_passes": "one GRPO step's passes in local worker mode, the harness of test_local_worker and test_gpu",
    "reference_repetition_penalty": "the authors' nltk + sklearn penalty, the oracle of the fast one",
    "run_local": "runs a function on N local ranks (processes): the harness of test_local_worker and test_gpu",
}
# Methods a library calls by its own protocol (never by name in this project).
LIBRARY_CALLBACKS = {
    "SafeLoadPlanner.load_bytes": "torch.distributed.checkpoint's LoadPlanner protocol",
    "SafeEmptyLoadPlanner.load_bytes": "torch.distributed.checkpoint's LoadPlanner protocol",
}


def _production_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--", *[f"{pkg}/*.py" for pkg in PRODUCTION]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def _registered(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in node.decorator_list:
        func = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name.startswith("register_"):
            return True
    return False


def _definitions(tree: ast.Module) -> list[tuple[str, str, int]]:
    """(name, qualified name, line) of the public functions, classes and methods of a module."""
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            if not _registered(node):
                found.append((node.name, node.name, node.lineno))
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            found.append((node.name, node.name, node.lineno))
            for sub in node.body:
                public = isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and not sub.name.startswith(
                    "_"
                )
                if public and not _registered(sub):
                    found.append((sub.name, f"{node.name}.{sub.name}", sub.lineno))
    return found


def _names_used(tree: ast.Module) -> list[str]:
    # Docstrings (string statements) name functions without using them.
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }
    used = []
    for node in ast.walk(tree):
        if id(node) in docstrings:
            continue
        if isinstance(node, ast.Name):
            used.append(node.id)
        elif isinstance(node, ast.Attribute):
            used.append(node.attr)
        elif isinstance(node, ast.ImportFrom):
            used += [alias.name for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            used += re.findall(r"[A-Za-z_]\w*", node.value)
    return used


def unreferenced_definitions() -> dict[str, str]:
    """{qualified name: "path:line"} of the public definitions production never refers to."""
    files = _production_files()
    trees = {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in files}
    uses: dict[str, int] = {}
    for tree in trees.values():
        for name in _names_used(tree):
            uses[name] = uses.get(name, 0) + 1
    others = [*ROOT.glob("scripts/*.sh"), *ROOT.glob("configs/**/*.yaml"), ROOT / "pyproject.toml"]
    other_text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in others)
    dead = {}
    for path, tree in trees.items():
        for name, qualified, line in _definitions(tree):
            # A use is any occurrence besides the definition itself (which is no ast.Name).
            if uses.get(name, 0):
                continue
            if re.search(rf"\b{name}\b", other_text):
                continue
            dead[qualified] = f"{path.relative_to(ROOT)}:{line}"
    return dead


def test_every_public_function_is_used_by_production() -> None:
    dead = unreferenced_definitions()
    unexpected = {n: where for n, where in dead.items() if n not in TEST_SEAMS and n not in LIBRARY_CALLBACKS}
    assert not unexpected, (
        "defined in production code but referenced only from tests (or nowhere): delete them with their "
        "tests, or wire them where they belong: "
        + ", ".join(f"{n} ({w})" for n, w in sorted(unexpected.items()))
    )
    # The seams stay seams: one that production now uses (or that is gone) leaves the list.
    assert sorted(dead.keys() & TEST_SEAMS.keys()) == sorted(TEST_SEAMS)


def test_the_scan_finds_a_function_nothing_calls(tmp_path: Path) -> None:
    """The scan's own check: a module with one used and one unused function."""
    tree = ast.parse("def used():\n    pass\n\ndef unused():\n    pass\n\nused()\n")
    names = _names_used(tree)
    defined = [name for name, _, _ in _definitions(tree)]
    assert defined == ["used", "unused"]
    assert "used" in names and "unused" not in names
