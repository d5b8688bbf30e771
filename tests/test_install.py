"""The installed layout: a wheel of mupbench adds exactly one top-level package, `mupbench`, so it lives beside a
package that owns a generic name such as `kernels` (the Hugging Face kernel hub's) without either replacing the other."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _wheel(source: Path, out: Path) -> Path:
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                          str(out), str(source)], capture_output=True, text=True)
    if res.returncode:
        pytest.fail(f"building a wheel of {source} failed:\n{res.stderr[-3000:]}")
    return next(out.glob("*.whl"))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A scratch site-packages holding mupbench's wheel and a stub package that owns `kernels/__init__.py`."""
    tmp = tmp_path_factory.mktemp("install")
    stub = tmp / "stub"
    (stub / "kernels").mkdir(parents=True)
    (stub / "kernels" / "__init__.py").write_text("OWNER = 'kernel-hub stub'\n")
    (stub / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "kernels"
        version = "0.0.1"
        [tool.setuptools]
        packages = ["kernels"]
    """))
    wheels = [_wheel(ROOT, tmp / "wheels"), _wheel(stub, tmp / "stub-wheels")]
    site = tmp / "site"
    for order in (wheels, wheels[::-1]):  # whichever is installed second must not replace the other
        res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--upgrade",
                              "--target", str(site), *map(str, order)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-3000:]
    return site


def test_the_wheel_installs_one_top_level_package(site):
    names = sorted(p.name for p in site.iterdir() if p.name not in ("bin", "__pycache__"))
    ours = [n for n in names if not n.startswith("kernels")]
    assert [n for n in ours if not n.endswith(".dist-info")] == ["mupbench"]
    assert [n for n in ours if n.endswith(".dist-info")] == ["mupbench-0.1.0.dist-info"]
    subpackages = {p.name for p in (site / "mupbench").iterdir() if (p / "__init__.py").exists()}
    assert {"ablations", "kernels", "reports", "cli", "byo", "coord_check", "executors", "trainers"} <= subpackages
    top_level = (site / "mupbench-0.1.0.dist-info" / "top_level.txt")
    assert not top_level.exists() or top_level.read_text().split() == ["mupbench"]


def test_mupbench_and_a_package_named_kernels_both_import(site):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(site)!r})
        import kernels, mupbench, mupbench.kernels, mupbench.cli, mupbench.reports.build, mupbench.ablations
        from mupbench import analyze_frame, rms_norm, attention, build_model
        assert kernels.OWNER == 'kernel-hub stub', kernels.__file__
        for m in (mupbench, mupbench.kernels, mupbench.cli, mupbench.reports.build, mupbench.ablations):
            assert m.__file__.startswith({str(site)!r}), m.__file__
        assert 'baseline' in mupbench.ablations.REGISTRY
        assert (site_templates := __import__('pathlib').Path(mupbench.reports.build.__file__).parent / 'templates').is_dir()
        print('ok')
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]
