"""The docs run: every ```python block of a docs page is executed in order in one namespace (like a
doctest: its asserts are the worked examples' numbers), the links between pages resolve, and the pdb
session of docs/debugging.md, fed to pdb on stdin, prints what the page says it prints."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.glob("*.md") if p.name != "parity.md")  # parity.md is not ours to run


def blocks(page, lang):
    return re.findall(rf"^```{lang}\n(.*?)^```", page.read_text(), re.S | re.M)


def test_every_topic_has_a_page():
    names = {p.name for p in PAGES}
    assert {"index.md", "conv2d.md", "maxpooling2d.md", "upsampling2d.md", "dense.md", "activations.md", "mse.md",
            "bce.md", "adam.md", "training_step.md", "debugging.md", "custom_layer.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_examples_run(page, capsys, monkeypatch, tmp_path):
    if page.name == "handoff.md":   # it hands a model to Keras and back
        pytest.importorskip("h5py", reason="docs/handoff.md needs h5py (pip install autoenc[h5])")
        pytest.importorskip("keras", reason="docs/handoff.md needs Keras 3 (pip install autoenc[keras])")
        monkeypatch.chdir(tmp_path)   # it writes model files
    code = blocks(page, "python")
    if page.name not in ("parity.md",):
        assert code, f"{page.name} has no worked example"
    if page.name == "onnx.md":   # the optional extra
        pytest.importorskip("onnxruntime", reason='docs/onnx.md needs onnx and onnxruntime (pip install "autoenc[onnx]")')
        monkeypatch.chdir(tmp_path)   # it writes tiny.onnx
    namespace = {"__name__": f"docs_{page.stem}"}
    for k, block in enumerate(code):
        exec(compile(block, f"{page.name}[python block {k}]", "exec"), namespace)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page):
    for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text()):
        assert (DOCS / target).exists(), f"{page.name} links to missing {target}"


def test_index_links_every_page():
    index = (DOCS / "index.md").read_text()
    for page in PAGES:
        if page.name not in ("index.md", "parity.md"):
            assert f"({page.name})" in index, page.name


def test_kernel_modules_link_their_pages():
    for module, page in [("autoenc/kernels/convolution.py", "conv2d.md"), ("autoenc/kernels/pooling.py",
                         "maxpooling2d.md"), ("autoenc/kernels/upsampling.py", "upsampling2d.md"),
                         ("autoenc/losses.py", "mse.md"), ("autoenc/losses.py", "bce.md"),
                         ("autoenc/optimizers.py", "adam.md"),
                         ("autoenc/kernels/normalization.py", "batchnorm.md")]:
        text = (ROOT / module).read_text()
        docstring = text[text.index('"""'):text.index('"""', text.index('"""') + 3)]
        assert f"docs/{page}" in docstring, module


def test_debugging_session_in_pdb(tmp_path):
    page = DOCS / "debugging.md"
    script = next(b for b in blocks(page, "python") if b.startswith("# debug_conv2d.py"))
    (tmp_path / "debug_conv2d.py").write_text(script)
    session = blocks(page, "console")[0].splitlines()
    commands = [line[len("(Pdb) "):] for line in session if line.startswith("(Pdb) ")]
    expected = [line for line in session if line.startswith(("[", "(", "dw =")) and not line.startswith("(Pdb)")]
    assert "NUMBA_DISABLE_JIT=1 python -m pdb debug_conv2d.py" in page.read_text()
    # this checkout's autoenc, not a copy installed elsewhere
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "pdb", "debug_conv2d.py"], input="\n".join(commands) + "\n",
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert "***" not in out, out  # pdb's prefix for an error: a command that failed
    assert out.count("Breakpoint ") >= 3, out
    for line in expected:
        assert line in out, f"pdb did not print {line!r}:\n{out}"
    assert "backward()" in out and "conv2d_backward_dz()" in out and "conv2d_backward_kernel_naive()" in out
