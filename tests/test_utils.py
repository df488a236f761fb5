"""autoenc.utils: seeding, argument normalisation, atomic writes."""
import os

import numpy as np
import pytest

from autoenc import utils
from autoenc.utils import atomic_write


def test_set_random_seed_reseeds_the_package_generator():
    utils.set_random_seed(3)
    a = utils.rng().random(4)
    utils.set_random_seed(3)
    np.testing.assert_array_equal(a, utils.rng().random(4))
    with pytest.raises(ValueError, match="seed"):
        utils.set_random_seed(-1)


def test_normalize_tuple_and_padding():
    assert utils.normalize_tuple(3, 2, "kernel_size") == (3, 3)
    assert utils.normalize_tuple((2, 5), 2, "strides") == (2, 5)
    with pytest.raises(ValueError, match=r"strides must be .* got \(2, 0\)"):
        utils.normalize_tuple((2, 0), 2, "strides")
    assert utils.normalize_padding("SAME") == "same"
    with pytest.raises(ValueError, match="padding"):
        utils.normalize_padding("full")


def test_atomic_write_creates_directories_with_the_usual_permissions(tmp_path):
    out = atomic_write(tmp_path / "a" / "b" / "f.bin", lambda f: f.write(b"abc"))
    assert out.read_bytes() == b"abc"
    assert os.listdir(tmp_path / "a" / "b") == ["f.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_atomic_write_keeps_the_old_file_and_leaves_nothing_when_writing_fails(tmp_path, error):
    (tmp_path / "f.bin").write_bytes(b"old")

    def fail_halfway(f):
        f.write(b"half")
        raise error

    with pytest.raises(type(error)):
        atomic_write(tmp_path / "f.bin", fail_halfway)
    assert (tmp_path / "f.bin").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]
