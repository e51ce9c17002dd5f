"""Packaging: every package directory is listed in pyproject.toml, and the CLI modules exist."""

import os
import subprocess
import sys

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOTS = {"lang": "sgl", "runtime": "sgl.runtime", "sgl-kernels": "sgl.kernels"}


def _pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _package_dirs():
    for folder, name in ROOTS.items():
        base = os.path.join(ROOT, folder)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            if any(f.endswith(".py") for f in filenames):
                rel = os.path.relpath(dirpath, base)
                yield dirpath, name if rel == "." else f"{name}.{rel.replace(os.sep, '.')}"


def test_package_dir_mapping():
    assert _pyproject()["tool"]["setuptools"]["package-dir"] == {v: k for k, v in ROOTS.items()}


def test_every_package_directory_is_listed():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    for dirpath, name in _package_dirs():
        assert os.path.isfile(os.path.join(dirpath, "__init__.py")), f"{dirpath} has modules but no __init__.py"
        assert name in listed, f"package {name} ({dirpath}) is missing from pyproject.toml"
    assert listed <= {name for _, name in _package_dirs()}, "pyproject lists a package that does not exist"


@pytest.mark.parametrize("module", ["sgl.bench_one_batch", "sgl.bench_offline_throughput", "sgl.launch_server"])
def test_cli_modules_are_importable(module):
    import importlib.util

    assert importlib.util.find_spec(module) is not None


def test_import_sgl_does_not_import_torch():
    code = "import sys, sgl; assert 'torch' not in sys.modules, 'import sgl pulled in torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def _importable_root_folders():
    """Folders at the repository root that Python would import by name from there (`python -m`,
    `python -c` and pytest put the current directory first on sys.path)."""
    for name in sorted(os.listdir(ROOT)):
        if name.isidentifier() and os.path.isfile(os.path.join(ROOT, name, "__init__.py")):
            yield name


def test_no_root_folder_shadows_an_installed_package():
    import importlib.metadata

    installed = importlib.metadata.packages_distributions()
    clashes = {name: installed[name] for name in _importable_root_folders()
               if set(installed.get(name, [])) - {"sgl"}}
    assert not clashes, f"run from the repository root, these folders hide installed packages: {clashes}"


def test_runtime_imports_from_the_repository_root():
    # transformers 5 imports Hugging Face's `kernels` package; a root folder of that name broke this.
    code = "import transformers.activations, sgl.runtime.entry.engine, sgl.kernels.rmsnorm"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)


def test_architecture_doc_names_every_module():
    with open(os.path.join(ROOT, "docs", "architecture.md")) as f:
        doc = f.read()
    missing = []
    for folder in ROOTS:
        for dirpath, _, filenames in os.walk(os.path.join(ROOT, folder)):
            for name in filenames:
                path = os.path.join(dirpath, name)
                if name.endswith(".py") and os.path.getsize(path) and f"`{os.path.relpath(path, ROOT)}`" not in doc:
                    missing.append(os.path.relpath(path, ROOT))
    assert not missing, f"docs/architecture.md's module map does not name {missing}"
