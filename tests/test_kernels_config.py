"""kernels/config.py: the Numba cache must never stop autoenc. With no writable cache directory (a
read-only container) the kernels compile in memory, with one warning; a damaged cache file (truncated,
or another function's) is recompiled and rewritten. Each case runs in a fresh process, on a copy of
the package, with its own NUMBA_CACHE_DIR."""
import os
import pathlib
import shutil
import stat
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# import autoenc (every kernel is declared, so every cache is located), then run two small kernels;
# prints a digest of their results
CHILD = r"""
import hashlib, warnings
warnings.simplefilter("always")
import numpy as np
import autoenc
from autoenc.kernels import pooling, upsampling
x = np.random.default_rng(0).standard_normal((2, 5, 3, 4)).astype(np.float32)
y = np.empty((2, 10, 9, 4), np.float32)
upsampling.upsample2d_forward(x, 2, 3, y)
p, argmax = np.empty((2, 3, 2, 4), np.float32), np.empty((2, 3, 2, 4), np.int32)
pooling.maxpool2d_forward(x, 2, 2, 2, 2, 0, 0, p, argmax)
print("DIGEST", hashlib.sha256(y.tobytes() + p.tobytes() + argmax.tobytes()).hexdigest())
"""


def copy_package(dest):
    """autoenc, without caches, at dest/autoenc; returns dest."""
    shutil.copytree(ROOT / "autoenc", dest / "autoenc", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def run(pkg_dir, cache_dir, extra_env=None):
    env = {**os.environ, "PYTHONPATH": str(pkg_dir), "NUMBA_CACHE_DIR": str(cache_dir),
           "PYTHONDONTWRITEBYTECODE": "1", **(extra_env or {})}
    env.pop("NUMBA_DISABLE_JIT", None)
    result = subprocess.run([sys.executable, "-c", CHILD], cwd=pkg_dir, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    digest = [line for line in result.stdout.splitlines() if line.startswith("DIGEST")][0]
    return digest, result.stderr


@pytest.fixture(scope="module")
def clean_digest(tmp_path_factory):
    """The results with a working cache, and that cache (filled)."""
    base = tmp_path_factory.mktemp("clean")
    pkg = copy_package(base / "pkg")
    digest, err = run(pkg, base / "cache")
    assert "Numba cache" not in err, err
    return digest, pkg, base / "cache"


def test_no_writable_cache_directory_compiles_without_a_cache(tmp_path, clean_digest):
    pkg = copy_package(tmp_path / "ro")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    # every place Numba could cache in is blocked, for root too (a file where a directory must go):
    # NUMBA_CACHE_DIR, the package's own __pycache__ folders, and the user-wide cache
    for folder in [p for p in (pkg / "autoenc").rglob("*") if p.is_dir()] + [pkg / "autoenc"]:
        (folder / "__pycache__").write_text("not a directory")
    for path in sorted(pkg.rglob("*"), reverse=True):      # and read-only, for everyone else
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        digest, err = run(pkg, blocker / "numba", {"XDG_CACHE_HOME": str(blocker / "xdg"),
                                                   "HOME": str(blocker / "home")})
    finally:
        for path in pkg.rglob("*"):
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert digest == clean_digest[0]
    assert err.count("no writable Numba cache directory") == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("damage", ["truncated", "another function's"])
def test_a_damaged_cache_is_recompiled(tmp_path, clean_digest, damage):
    digest0, pkg, filled = clean_digest
    cache = tmp_path / "cache"
    shutil.copytree(filled, cache)
    index = sorted(cache.rglob("*.nbi"))
    data = sorted(cache.rglob("*.nbc"))
    assert len(index) >= 2 and data
    if damage == "truncated":   # half the functions lose the end of their index, the others of their data
        for k, f in enumerate(index):
            files = [f] if k % 2 else [d for d in data if d.name.startswith(f.name[:-len(".nbi")] + ".")]
            for g in files:
                g.write_bytes(g.read_bytes()[:len(g.read_bytes()) // 2])
    else:   # every data file replaced by the first one: the compiled code of another function
        for f in data[1:]:
            shutil.copyfile(data[0], f)
    digest, err = run(pkg, cache)
    assert digest == digest0
    assert "damaged Numba cache entry" in err or "Numba cache entry of" in err, err
    assert err.count("RuntimeWarning") == 1, err
    assert "Traceback" not in err
    # the recompiled kernels were saved: the next start loads them, without a word
    digest, err = run(pkg, cache)
    assert digest == digest0
    assert "Numba cache" not in err, err


def test_every_kernel_is_compiled_through_config_njit():
    """A bare numba.njit(cache=True) crashes the import where no cache directory is writable (the
    failure config.njit exists to prevent): no module of the package may use one."""
    import pathlib
    import re
    root = pathlib.Path(__file__).resolve().parents[1] / "autoenc"
    bare = [f"{path.relative_to(root.parent)}:{k + 1}" for path in sorted(root.rglob("*.py"))
            if path.name != "config.py"
            for k, line in enumerate(path.read_text().splitlines())
            if re.search(r"numba\.(njit|jit)\(", line.split("#")[0])]
    assert bare == []


# pad_into calls blocks.copy1d, a helper in another file; prints the padded array
PAD_CHILD = r"""
import numpy as np
from autoenc.kernels.padding import pad_into
x = np.arange(1, 7, dtype=np.float32).reshape(1, 2, 3, 1)
xp = np.zeros((1, 4, 5, 1), np.float32)
pad_into(x, 1, 1, xp)
print("PADDED", xp[0, 1:3, 1:4, 0].ravel().tolist())
"""


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no compiled code to cache without the JIT")
def test_editing_a_helper_in_another_file_recompiles_its_callers(tmp_path):
    """Numba keys a cached kernel by its own file only: after an edit of blocks.copy1d, pad_into (in
    padding.py) would load its old machine code. The kernel sources' digest in the key recompiles it."""
    pkg = copy_package(tmp_path / "pkg")

    def padded():
        env = {**os.environ, "PYTHONPATH": str(pkg), "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
               "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("NUMBA_DISABLE_JIT", None)
        result = subprocess.run([sys.executable, "-c", PAD_CHILD], cwd=pkg, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return [line for line in result.stdout.splitlines() if line.startswith("PADDED")][0]

    assert padded() == "PADDED [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]"
    assert list((tmp_path / "cache").rglob("*padding._pad_into_samples*.nbi")), \
        "pad_into's range function was not cached: this checks nothing"
    blocks = pkg / "autoenc" / "kernels" / "blocks.py"
    source = blocks.read_text()
    assert "        out[k] = a[k]\n" in source
    blocks.write_text(source.replace("        out[k] = a[k]\n", "        out[k] = a[k] + 10\n", 1))
    assert padded() == "PADDED [11.0, 12.0, 13.0, 14.0, 15.0, 16.0]"


def test_a_numba_variable_set_after_import_leaves_the_slp_vectoriser_on(monkeypatch):
    """Numba reloads its configuration from the NUMBA_* variables at the next compile when one changed:
    the SLP vectoriser (off by Numba's default) must survive it, or later kernels compile slower."""
    import numba
    assert numba.config.SLP_VECTORIZE == 1
    monkeypatch.setenv("NUMBA_DEBUG_CACHE", "0")     # any NUMBA_ variable, set after import

    @numba.njit
    def one_more(x):
        return x + 1

    assert one_more(1) == 2                          # a compile: the configuration is reloaded
    assert numba.config.SLP_VECTORIZE == 1
