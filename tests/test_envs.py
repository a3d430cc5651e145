"""Each rule's conda environment (envs/*.yaml, used with `--sdm conda`) has what its script
imports, and the versions pyproject.toml pins.

A static check: conda is not reachable in CI. The rules (name, `conda:`, `script:`) are read
from workflow/rules/*.smk; a script's imports are followed through the `emergence` modules it
imports (and their parent packages' `__init__`), counting imports inside functions too (they
run when that code path does) but not those under `if TYPE_CHECKING:`. A third-party module is
covered when its distribution is declared in the env file itself (conda or pip section): a
package that merely happens to pull it in is not a declaration.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "workflow" / "rules"
SCRIPTS = ROOT / "workflow" / "scripts"
SRC = ROOT / "src"
PACKAGE = "emergence"

# Import name -> distribution, for modules not installed where the test runs (the installed
# ones are looked up in their metadata).
IMPORT_TO_DIST = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn",
                  "cv2": "opencv-python", "skimage": "scikit-image"}
# conda-forge package -> the PyPI distribution it provides.
CONDA_TO_PYPI = {"matplotlib-base": "matplotlib", "pytorch": "torch", "py-opencv": "opencv-python"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def smk_rules() -> dict[str, tuple[Path | None, Path | None]]:
    """{rule: (conda env file, script)} from the rule files' text (paths resolved)."""
    found: dict[str, tuple[Path | None, Path | None]] = {}
    for smk in sorted(RULES.glob("*.smk")):
        text = smk.read_text()
        starts = list(re.finditer(r"^\s*rule\s+(\w+)\s*:", text, re.MULTILINE))
        for i, m in enumerate(starts):
            body = text[m.end(): starts[i + 1].start() if i + 1 < len(starts) else len(text)]
            paths = {key: (smk.parent / value).resolve() for key, value in
                     re.findall(r"^\s*(conda|script)\s*:\s*\n?\s*[\"']([^\"']+)[\"']", body,
                                re.MULTILINE)}
            entry = (paths.get("conda"), paths.get("script"))
            # a rule defined twice (images: one definition per image source) must agree
            assert found.setdefault(m.group(1), entry) == entry, m.group(1)
    return found


class _Imports(ast.NodeVisitor):
    """Absolute module names imported by one file (relative imports resolved)."""

    def __init__(self, package: str | None) -> None:
        self.package = package
        self.names: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.names.update(alias.name for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            assert self.package is not None
            base = self.package.split(".")
            base = base[: len(base) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        self.names.add(module)
        # `from emergence import figures` imports the module emergence.figures
        self.names.update(f"{module}.{alias.name}" for alias in node.names)


def _package_file(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] == PACKAGE:
        base = SRC.joinpath(*parts)
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
        return None
    if len(parts) == 1 and (SCRIPTS / f"{module}.py").is_file():  # _src next to the scripts
        return SCRIPTS / f"{module}.py"
    return None


@cache
def third_party_imports(script: Path) -> dict[str, str]:
    """{top-level third-party module: the file that imports it}, through local modules."""
    found: dict[str, str] = {}
    todo, seen = [(script, None)], set()
    while todo:
        path, module = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        package = None
        if module is not None:
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        visitor = _Imports(package)
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        for name in sorted(visitor.names):
            parts = name.split(".")
            local = _package_file(name)
            if local is not None or parts[0] == PACKAGE:
                # importing a.b.c runs a/__init__, a/b/__init__ and c
                for k in range(1, len(parts) + 1):
                    file = _package_file(".".join(parts[:k]))
                    if file is not None:
                        todo.append((file, ".".join(parts[:k])))
                continue
            top = parts[0]
            if top in sys.stdlib_module_names or top == "__main__" or not top:
                continue
            found.setdefault(top, str(path.relative_to(ROOT)))
    return found


@cache
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions(module: str) -> set[str]:
    """Distributions that may provide the top-level ``module``."""
    names = set(_installed().get(module, []))
    names.add(IMPORT_TO_DIST.get(module, module))
    return {norm(n) for n in names}


def env_specs(env: Path) -> dict[str, str]:
    """{distribution: version specifier} declared by a conda env file (conda and pip)."""
    specs: dict[str, str] = {}
    for dep in yaml.safe_load(env.read_text())["dependencies"]:
        if isinstance(dep, dict):
            for pip in dep.get("pip", []):
                req = Requirement(pip)
                specs[norm(req.name)] = str(req.specifier)
        else:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", dep.strip())
            assert m, dep
            name = norm(m.group(1))
            specs[norm(CONDA_TO_PYPI.get(name, name))] = m.group(2).replace(" ", "")
    return specs


def pyproject_specs() -> dict[str, SpecifierSet]:
    """{distribution: version specifier} of every requirement in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        deps += extra
    return {norm(req.name): req.specifier for req in map(Requirement, deps)}


RULE_ENVS = smk_rules()
SCRIPTED = sorted(name for name, (_, script) in RULE_ENVS.items() if script is not None)


def test_rules_are_parsed() -> None:
    assert {"images", "activations", "word_vectors", "permutations", "one_vs_two",
            "fig1_word_models", "overview", "summary_two_vs_two"} <= set(SCRIPTED)
    for name in SCRIPTED:
        env, script = RULE_ENVS[name]
        assert env is not None and env.is_file(), f"rule {name}: no conda env file ({env})"
        assert script is not None and script.is_file(), f"rule {name}: no script ({script})"


def test_import_walk_follows_the_package() -> None:
    """The walk sees what `import emergence` pulls in (torch, numba via the kernels)."""
    mods = third_party_imports(SCRIPTS / "overview.py")
    assert {"matplotlib", "numpy", "h5py", "scipy", "torch", "numba"} <= mods.keys()
    assert "gensim" not in mods and "emergence" not in mods and "_src" not in mods
    assert distributions("PIL") == {"pillow"} and distributions("yaml") == {"pyyaml"}


@pytest.mark.parametrize("rule", SCRIPTED)
def test_env_covers_every_module_the_script_imports(rule: str) -> None:
    env, script = RULE_ENVS[rule]
    assert env is not None and script is not None
    declared = set(env_specs(env))
    missing = {module: importer for module, importer in third_party_imports(script).items()
               if not distributions(module) & declared}
    assert not missing, (f"rule {rule}: {env.relative_to(ROOT)} lacks "
                         + ", ".join(f"{m} (imported by {f})" for m, f in sorted(missing.items())))


@pytest.mark.parametrize("env", sorted(p.name for p in (ROOT / "envs").glob("*.yaml")))
def test_env_versions_match_pyproject(env: str) -> None:
    """Every package both declare has the same versions: the pins (==) above all."""
    wanted = pyproject_specs()
    assert str(wanted["torch"]).startswith("=="), "pyproject.toml pins torch"
    wrong = {}
    for name, spec in env_specs(ROOT / "envs" / env).items():
        if name not in wanted:
            continue
        try:
            same = SpecifierSet(spec) == wanted[name]
        except InvalidSpecifier:  # conda-only syntax (=1.2, 1.2.*) for a package pip pins
            same = False
        if not same:
            wrong[name] = (spec, str(wanted[name]))
    assert not wrong, f"envs/{env}: " + ", ".join(
        f"{name} {spec or '(any version)'} but pyproject.toml says {pin or '(any version)'}"
        for name, (spec, pin) in sorted(wrong.items()))
