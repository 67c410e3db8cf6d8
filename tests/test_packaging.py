"""Packaging: the wheel holds only the indextts2_onnx namespace (export, runtime and, from tools/, the
benchmark package), and the extras keep ORT builds apart."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(REPO)], check=True, capture_output=True)
    return next(out.glob("indextts2_onnx-*.whl"))


def test_wheel_installs_only_the_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"indextts2_onnx"}
    for module in ("runtime/pipeline.py", "runtime/sampling.py", "runtime/presets/default.yaml",
                   "runtime/serve/app.py", "runtime/serve/ray_app.py", "export/modules/gpt.py", "export/bundle.py"):
        assert f"indextts2_onnx/{module}" in names
    assert not any(n.startswith("indextts2_onnx/tests") or "/tools/" in n for n in names)
    # the namespace holds the three packages; of tools/, only the benchmark package (as indextts2_onnx.bench)
    assert {n.split("/")[1] for n in names if n.startswith("indextts2_onnx/")} == {"export", "runtime", "bench"}
    bench = {n for n in names if n.startswith("indextts2_onnx/bench/")}
    assert bench == {f"indextts2_onnx/bench/{p.name}" for p in (REPO / "tools" / "bench").glob("*.py")}
    assert {"indextts2_onnx/bench/__init__.py", "indextts2_onnx/bench/runtime_worker.py"} <= bench
    # every module has its source in the tree (an in-tree build/ keeps copies of deleted modules: remove it)
    source = {"export": "export", "runtime": "runtime", "bench": "tools/bench"}
    stale = [n for n in names if n.endswith(".py") and n.startswith("indextts2_onnx/")
             and not (REPO / source[n.split("/")[1]] / n.split("/", 2)[2]).is_file()]
    assert not stale, f"modules without a source file: {stale}"
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "indextts2-onnx = indextts2_onnx.runtime.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_extras_never_mix_onnxruntime_builds():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = " ".join(project["dependencies"])
    extras = project["optional-dependencies"]
    assert "onnxruntime" not in deps and "torch" not in deps
    assert extras["cpu"] == ["onnxruntime>=1.22,<2"]
    assert all("onnxruntime" not in d for d in extras["export"])
    assert any(d.startswith("onnxruntime-gpu") for d in extras["gpu"])
    # the server's libraries are extras: the runtime wheel stays light
    assert not any(lib in deps for lib in ("fastapi", "uvicorn", "ray", "prometheus"))
    assert {d.split(">")[0] for d in extras["serve"]} == {"fastapi", "uvicorn", "python-multipart", "prometheus-client"}
    assert "indextts2-onnx[serve]" in extras["ray"] and any(d.startswith("ray[serve]") for d in extras["ray"])


def test_runtime_without_onnxruntime_names_the_extra():
    code = ("import importlib.util as u; _f = u.find_spec; "
            "u.find_spec = lambda n, *a: None if n == 'onnxruntime' else _f(n, *a); "
            "import indextts2_onnx.runtime")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "indextts2-onnx[cpu]" in out.stderr and "[gpu]" in out.stderr


def test_export_without_torch_names_the_extra():
    code = ("import importlib.util as u; _f = u.find_spec; "
            "u.find_spec = lambda n, *a: None if n == 'torch' else _f(n, *a); "
            "from indextts2_onnx.runtime.cli import main; raise SystemExit(main(['export', 'x', '--out', 'y']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2
    assert "indextts2-onnx[export,cpu]" in out.stderr
