"""autoenc.utils: seeding, argument normalisation and field errors (atomic writes: tests/test_files.py)."""

import numpy as np
import pytest

from autoenc import utils


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



class _FieldError(Exception):
    pass


class _SaysWhere(ValueError):
    names_its_field = True


@pytest.mark.parametrize("raise_, message", [
    (lambda: {}["kernel"], "layers[2]: missing entry 'kernel'"),
    (lambda: [][3], "layers[2]: missing entry list index out of range"),
    (lambda: int("x"), "layers[2]: ValueError: invalid literal for int() with base 10: 'x'"),
    (lambda: None.shape, "layers[2]: AttributeError: 'NoneType' object has no attribute 'shape'"),
    (lambda: (_ for _ in ()).throw(_SaysWhere("architecture.layers[7]: bad")), "architecture.layers[7]: bad"),
    (lambda: (_ for _ in ()).throw(_FieldError("as it was")), "as it was"),
])
def test_field_errors_names_the_field(raise_, message):
    with pytest.raises(_FieldError) as info:
        with utils.field_errors("layers[2]", _FieldError):
            raise_()
    assert str(info.value) == message


def test_field_errors_lets_other_errors_and_success_through():
    with utils.field_errors("x", _FieldError):
        value = 1
    assert value == 1
    with pytest.raises(ZeroDivisionError):
        with utils.field_errors("x", _FieldError):
            1 / 0
