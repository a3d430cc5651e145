"""Start-up: what each job imports before it computes anything.

Every job is a fresh interpreter (a rule's script, or on SLURM a whole Snakemake that first
builds the DAG). torch costs ~2 s and ~1 GB there, scipy.stats ~0.5 s: only the code that
computes with them imports them. Each check runs in a fresh interpreter: this one has them
loaded already.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import emergence
from emergence.device import _no_gpu_driver, cuda_available

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
RULES = ROOT / "workflow" / "rules"
HEAVY = ("torch", "scipy", "numba", "matplotlib", "timm")

# The rules whose jobs compute with torch, and why. Their scripts' imports stay light too
# unless the rule is also in IMPORTS_TORCH: torch loads where the computation starts.
NEEDS_TORCH = {
    "activations": "the network's forward pass (precomputed features need none)",
    "word_vectors": "a text encoder's forward pass (a static word model needs none)",
    "two_vs_two": "the 2 vs 2 engine holds W as a float64 tensor (its definition, CUDA)",
    "permutations": "the 2 vs 2 engine; the CUDA path of every null",
}
# The scripts whose imports load torch (none: the activations script imports the forward
# pass where it runs one, not for a network of precomputed features).
IMPORTS_TORCH: set[str] = set()


def rule_scripts() -> dict[str, Path]:
    """{rule: its script} from workflow/rules/*.smk."""
    found: dict[str, Path] = {}
    for smk in sorted(RULES.glob("*.smk")):
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.MULTILINE)[1:]:
            script = re.search(r"^    script:\n\s+\"([^\"]+)\"", block, re.MULTILINE)
            if script:
                name = re.match(r"rule (\w+):", block).group(1)
                found[name] = (smk.parent / script.group(1)).resolve()
    return found


def script_imports(script: Path) -> list[str]:
    """The modules a script imports at its top level, in order (its other lines run the job)."""
    modules: list[str] = []
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.append(node.module)
    return modules


def loaded_after(modules: list[str], cwd: Path = SCRIPTS) -> list[str]:
    """Which of HEAVY a fresh interpreter holds after importing ``modules`` (from ``cwd``,
    as Snakemake runs a script: its folder first on sys.path, so `import _src` works)."""
    code = ("import importlib, json, sys\n"
            f"sys.path.insert(0, {str(cwd)!r})\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module(m)\n"
            f"print(json.dumps([h for h in {HEAVY!r} if h in sys.modules]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_every_rule_with_a_script_is_listed_here_or_torch_free() -> None:
    scripts = rule_scripts()
    assert len(scripts) == sum(t.read_text().count("    script:") for t in RULES.glob("*.smk"))
    assert set(NEEDS_TORCH) <= set(scripts), set(NEEDS_TORCH) - set(scripts)
    assert IMPORTS_TORCH <= set(NEEDS_TORCH)
    for script in scripts.values():
        assert script.is_file(), script


@pytest.mark.parametrize("rule", sorted(set(rule_scripts()) - IMPORTS_TORCH))
def test_a_job_imports_torch_only_where_it_computes_with_it(rule: str) -> None:
    script = rule_scripts()[rule]
    modules = script_imports(script)
    assert modules[0] == "_src", f"{script.name}: `import _src` must come first"
    loaded = loaded_after(modules)
    assert "torch" not in loaded, (rule, loaded)
    if rule not in NEEDS_TORCH:  # nor the other heavy imports a statistics job never uses
        assert not {"scipy", "numba", "timm"} & set(loaded), (rule, loaded)


def test_the_config_loads_without_torch_scipy_or_numba() -> None:
    """`import emergence.config` (common.smk's, on every DAG build): light, < 0.5 s quiet."""
    assert loaded_after(["emergence.config"], ROOT) == []
    assert loaded_after(["emergence", "emergence.errors", "emergence.io"], ROOT) == []


def test_the_rule_files_imports_are_torch_free() -> None:
    """What the Snakefile and the rule files import at parse time (common.smk's helpers)."""
    modules = []
    for path in [ROOT / "workflow" / "Snakefile", *sorted(RULES.glob("*.smk"))]:
        modules += re.findall(r"^(?:from (\S+) import|import (\S+))", path.read_text(),
                              re.MULTILINE)
    names = [a or b for a, b in modules]
    assert "emergence.config" in names and "emergence.device" in names
    assert loaded_after(names, ROOT) == []


def test_cuda_is_known_absent_without_torch_only_where_torch_agrees(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a GPU driver, device.py answers "no CUDA" without importing torch; the answer
    is torch's own wherever this runs (with a driver it asks torch)."""
    import torch

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert not (_no_gpu_driver() and torch.cuda.is_available())
    assert cuda_available() == torch.cuda.is_available()


@pytest.mark.skipif(not _no_gpu_driver(), reason="with a GPU driver, the DAG asks torch "
                    "whether CUDA is available (device 'auto' jobs request a gpu)")
def test_building_the_dag_imports_no_torch(tmp_path: Path) -> None:
    """`snakemake -n` on the demo config: parsing, config checks, GPU slots, the DAG."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "--snakefile",
         str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile",
         str(ROOT / "config" / "config.yaml"), "--config", f"results={tmp_path}/results",
         f"images={{concepts: {ROOT / 'config' / 'demo_concepts.tsv'}}}"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "This was a dry-run" in proc.stdout
    imported = re.findall(r"^import time:.*\|\s+(\S+)$", proc.stderr, re.MULTILINE)
    assert "emergence.config" in imported
    assert not {"torch", "scipy.stats", "numba"} & set(imported)


def test_the_public_api_loads_on_first_use() -> None:
    code = ("import sys, emergence\n"
            "before = 'emergence.stats.cka' in sys.modules\n"
            "import numpy as np\n"
            "x = np.random.default_rng(0).standard_normal((6, 4))\n"
            "print(before, round(emergence.cka(x, x), 9), 'emergence.stats.cka' in sys.modules,\n"
            "      'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["False", "1.0", "True", "False"]


def test_the_interval_modules_load_light() -> None:
    """The jackknife, significance and comparisons jobs' modules (issue 20) import neither
    torch nor scipy nor numba until they compute."""
    modules = ["emergence.stats.jackknife", "emergence.stats.intervals", "emergence.uncertainty",
               "emergence.tables.significance_table", "emergence.tables.comparison_table",
               "emergence.tables.score_table", "emergence.tables.one_vs_two_table",
               "emergence.tables.null_summary"]
    assert loaded_after(modules, ROOT) == []


def test_the_jackknife_and_the_intervals_compute_without_torch() -> None:
    """A jackknife job (every measure) and the intervals of its samples never load torch:
    the deletion kernels are numba and numpy on the CPU."""
    code = ("import sys, numpy as np\n"
            "from emergence.stats.jackknife import jackknife_distribution, jackknife_pairs\n"
            "from emergence.stats.intervals import concept_variance, interval\n"
            "from emergence.stats.similarity import similarity_matrix\n"
            "from emergence.stats.cka import linear_gram\n"
            "rng = np.random.default_rng(0)\n"
            "x = rng.standard_normal((20, 6)); y = x + rng.standard_normal((20, 6))\n"
            "out = jackknife_distribution(similarity_matrix(x), [similarity_matrix(y)], seed=0,\n"
            "    n_pairs=30, measures=('two_vs_two', 'rsa', 'cka', 'cka_debiased', 'mutual_knn'),\n"
            "    word_gram=linear_gram(x), image_grams=[linear_gram(y)], knn_k=3)\n"
            "var = concept_variance(out['rsa'], 20, jackknife_pairs(0, 20, 30))\n"
            "low, high = interval(out['rsa'][0], var)\n"
            "assert np.isfinite(low).all() and np.isfinite(high).all()\n"
            "print('torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["False"]


def test_every_public_name_resolves_to_its_module() -> None:
    public = [n for n in emergence.__all__ if n != "__version__"]
    assert sorted(public) == sorted(emergence._HOME)
    assert set(emergence.__all__) <= set(dir(emergence))
    for name in public:
        home = sys.modules.get(emergence._HOME[name]) or __import__(
            emergence._HOME[name], fromlist=[name])
        assert getattr(emergence, name) is getattr(home, emergence._ALIAS.get(name, name)), name
    namespace: dict[str, object] = {}
    exec("from emergence import *", namespace)
    assert set(emergence.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="has no attribute 'two_vs_three'"):
        emergence.two_vs_three  # noqa: B018
