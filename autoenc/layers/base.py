"""The Layer base class and the symbolic tensors that functional models are built from.

A layer is built lazily from the first input shape it sees (``build(input_shape)``, shapes with
the batch size as None), owns its parameters (``params``) and their gradients (``grads``, same
shapes, assigned, never accumulated across calls; trainable weights only: the non-trainable ones,
such as BatchNormalization's moving statistics, have none and never reach the optimizer), and
computes ``forward(x, training)`` and ``backward(dy)``. Calling a layer on a symbolic tensor (from
``Input``) records a ``Node`` in the graph and returns a new symbolic tensor; calling it on an array
runs it eagerly.
"""
import re

import numpy as np

from autoenc import activations, initializers, regularizers, utils
from autoenc.kernels.workspace import aligned

_name_counts = {}


def unique_name(base):
    """'conv2d', then 'conv2d_1', 'conv2d_2', ... as Keras names layers."""
    n = _name_counts.get(base, 0)
    _name_counts[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


def clear_session():
    """Reset layer-name counters, as keras.backend.clear_session() does."""
    _name_counts.clear()


def snake_case(name):
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def format_shape(shape):
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


TRACE_HELP = ("autoenc builds a model from the layer calls made on its symbolic tensors (a layer or model "
               "called on a KerasTensor returns one); arithmetic, NumPy or backend operations, .numpy() and "
               "Python `if` on a symbolic tensor cannot be traced. Write the computation as a layer "
               "(docs/custom_layer.md) or use autoenc's layers (Add, Activation, Reshape, ...)")


class EagerArray(np.ndarray):
    """What calling a layer or a model on arrays returns: a NumPy array (it works wherever one does)
    that also answers ``.numpy()``, as a TensorFlow eager tensor does, so ``model(x).numpy()`` runs."""

    def numpy(self):
        """The same data as a plain ``np.ndarray`` (a view, not a copy)."""
        return self.view(np.ndarray)

    def __array_wrap__(self, array, context=None, return_scalar=False):
        # a full reduction (y.sum(), np.mean(y)) gives a NumPy scalar, as it does on a plain array
        if return_scalar or array.ndim == 0:
            return array[()]
        return super().__array_wrap__(array, context, return_scalar)


def eager(array):
    """``array`` (an np.ndarray) viewed as an EagerArray."""
    return array.view(EagerArray)


class KerasTensor:
    """A symbolic tensor: a shape whose first entry (the batch) is None, and the node that made it.

    It holds no values: calling layers on it builds a graph. Operations on values (``x + 1``,
    ``np.sum(x)``, ``x.numpy()``, ``if x: ...``) raise a TypeError saying what is supported."""

    def __init__(self, shape, dtype="float32", node=None, name=None):
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.node = node
        self.name = name

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        return f"<KerasTensor shape={format_shape(self.shape)}, dtype={self.dtype}, name={self.name}>"

    def _untraceable(self, what):
        raise TypeError(f"{what} on the symbolic tensor {self!r} is not supported: {TRACE_HELP}")

    def __bool__(self):
        self._untraceable("Python control flow (`if`, `and`, `or`, bool())")

    def __array__(self, dtype=None, copy=None):
        self._untraceable("A NumPy operation")

    def numpy(self):
        self._untraceable(".numpy()")

    def __len__(self):
        self._untraceable("len()")

    def __iter__(self):
        self._untraceable("Iterating")

    def __getitem__(self, key):
        self._untraceable(f"Indexing [{key!r}]")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        self._untraceable(f"The NumPy function {ufunc.__name__}")

    def __array_function__(self, func, types, args, kwargs):
        self._untraceable(f"The NumPy function {func.__name__}")


def _refuse_operator(symbol):
    def operator(self, *other):
        self._untraceable(f"The operator {symbol}")
    return operator


for _name, _symbol in [("add", "+"), ("sub", "-"), ("mul", "*"), ("truediv", "/"), ("floordiv", "//"),
                       ("mod", "%"), ("pow", "**"), ("matmul", "@")]:
    setattr(KerasTensor, f"__{_name}__", _refuse_operator(_symbol))
    setattr(KerasTensor, f"__r{_name}__", _refuse_operator(_symbol))
for _name, _symbol in [("neg", "unary -"), ("pos", "unary +"), ("abs", "abs()"), ("lt", "<"), ("le", "<="),
                       ("gt", ">"), ("ge", ">=")]:
    setattr(KerasTensor, f"__{_name}__", _refuse_operator(_symbol))


class Node:
    """One call of a layer in a graph: its input tensors and its output tensor (``output``; for a call
    of a model with several outputs, the list of its output tensors). ``outputs`` is always a list."""

    def __init__(self, layer, inputs, output):
        self.layer = layer
        self.inputs = inputs
        self.output = output

    @property
    def outputs(self):
        return list(self.output) if isinstance(self.output, list) else [self.output]


class Layer:
    """Base class of every layer.

    Subclasses implement ``build(input_shape)`` (creating weights with ``add_weight``),
    ``compute_output_shape(input_shape)``, ``forward(x, training)`` and ``backward(dy)``; a layer
    ending in an activation may also expose its pre-activation as ``logits`` and accept
    ``backward(dz, from_logits=True)`` (see both).
    """

    # True for layers whose backward accepts need_dx=False (skip dL/dx when nothing upstream needs it)
    can_skip_dx = False

    def __init__(self, name=None, trainable=True, dtype=None, activity_regularizer=None,
                 input_shape=None, input_dim=None, batch_size=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument(s): {sorted(kwargs)}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, got {name!r}")
        self.name = name or unique_name(snake_case(type(self).__name__))
        self.trainable = bool(trainable)
        self.dtype = np.dtype(dtype or "float32")
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.activity_regularizer = regularizers.get(activity_regularizer)
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        # Keras 2 style `input_shape=` on a first layer; Sequential reads it
        self._input_shape_arg = None if input_shape is None else tuple(input_shape)
        self.built = False
        self.params = {}          # name -> array, in creation order (Keras' order)
        self.grads = {}           # name -> array of the same shape, filled by backward (trainable weights only)
        self._regularizers = {}   # name -> Regularizer
        self._non_trainable = set()  # names of weights that training does not update (add_weight(trainable=False))
        self._buffers = {}        # reusable work arrays, by purpose
        self.input_shape = None
        self.output_shape = None
        self._activity_loss = 0.0

    # --- building ------------------------------------------------------------------------------

    def build(self, input_shape):
        """Create the weights for inputs of ``input_shape`` (batch entry None)."""
        self.built = True

    def _build_once(self, input_shape):
        input_shape = tuple(input_shape)
        if not self.built:
            self.build(input_shape)
            self.built = True
            self.input_shape = input_shape
            self.output_shape = self.compute_output_shape(input_shape)

    def compute_output_shape(self, input_shape):
        """The output shape for ``input_shape`` (both with the batch entry, None for symbolic)."""
        return tuple(input_shape)

    def _set_kernel_bias_options(self, activation, use_bias, kernel_initializer, bias_initializer,
                                 kernel_regularizer, bias_regularizer, kernel_constraint, bias_constraint):
        """The arguments Conv2D and Dense share with Keras: kept as objects (constraints refused)."""
        if kernel_constraint is not None or bias_constraint is not None:
            raise ValueError(f"{type(self).__name__} does not support kernel or bias constraints")
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def _kernel_bias_config(self):
        """The config entries of :meth:`_set_kernel_bias_options`, serialized as Keras does."""
        return {"activation": activations.serialize(self.activation), "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer)}

    def add_weight(self, name, shape, initializer, regularizer=None, trainable=True):
        """Create a parameter and, if ``trainable``, its gradient buffer. Returns the parameter array.

        A non-trainable weight (``trainable=False``) is kept in ``params`` (so get_weights, set_weights
        and saving see it, in creation order) but gets no gradient and is not updated by the optimizer;
        the layer itself updates it, as BatchNormalization does its moving statistics."""
        value = initializers.get(initializer)(shape, self.dtype)
        self.params[name] = value
        if trainable:
            self.grads[name] = np.zeros_like(value)
        else:
            self._non_trainable.add(name)
        if regularizer is not None:
            self._regularizers[name] = regularizer
        return value

    # --- computing -----------------------------------------------------------------------------

    def forward(self, x, training=False):
        """Compute the output for input x. Subclasses override."""
        raise NotImplementedError

    def backward(self, dy, from_logits=False):
        """Given dy = dL/dy for the last forward call, fill ``grads`` and return dL/dx.

        dy : array shaped like the last forward's output. With ``from_logits=True`` dy is instead
        dL/dz for the pre-activation z that ``logits`` returned (the loss having been taken from the
        logits, e.g. binary crossentropy after a sigmoid): the layer skips its activation's derivative.
        Only layers whose ``logits`` is not None are ever asked for it, and only as a model's output
        layer. Subclasses override (a layer without an activation may leave ``from_logits`` out).
        """
        raise NotImplementedError

    @property
    def logits(self):
        """The pre-activation z of the last forward call, shaped like its output y = activation(z), for
        layers that end in an activation (Conv2D, Dense, Activation); None for the others and before
        any forward call. Training reads it to take binary crossentropy from the logits when the
        output layer is a sigmoid, and then calls ``backward(dz, from_logits=True)``."""
        return None

    def _buffer(self, key, shape, zeros=False, dtype=None):
        """A work array of ``shape`` (and ``dtype``, the layer's by default) kept for reuse; reallocated
        only when the shape changes. Its data starts on a cache line (workspace.aligned)."""
        dtype = self.dtype if dtype is None else dtype
        buf = self._buffers.get(key)
        if buf is None or buf.shape != shape:
            buf = aligned(shape, dtype, zeros)
            self._buffers[key] = buf
        return buf

    def check_input_shape(self, shape):
        """Raise ValueError if an input of ``shape`` does not fit this layer. Subclasses extend."""

    def __call__(self, inputs, training=False):
        """On a symbolic tensor: record the call and return a symbolic output. On arrays: run forward
        and return a copy of the output as an EagerArray (an ndarray that also answers ``.numpy()``)."""
        symbolic = isinstance(inputs, KerasTensor) or (
            isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, KerasTensor) for t in inputs))
        if symbolic:
            return self._call_symbolic(inputs)
        if isinstance(inputs, (list, tuple)):
            arrays = [np.ascontiguousarray(a, dtype=self.dtype) for a in inputs]
            shape = [(None,) + a.shape[1:] for a in arrays]
        else:
            arrays = np.ascontiguousarray(inputs, dtype=self.dtype)
            shape = (None,) + arrays.shape[1:]
        self.check_input_shape(shape)
        for k, a in enumerate(arrays if isinstance(arrays, list) else [arrays]):
            if a.dtype.kind == "f" and not np.isfinite(a).all():   # the eager call, never a training step
                bad = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
                what = f"input {k}" if isinstance(arrays, list) else "input"
                raise ValueError(f"Layer {self.name!r} {what} contains NaN or Inf (first at index {bad}: {a[bad]})")
        with utils.compute_lock:   # work buffers are the layer's: one thread at a time
            self._build_once(shape)
            return eager(np.array(self.forward(arrays, training=training), copy=True))

    def _call_symbolic(self, inputs):
        if isinstance(inputs, KerasTensor):
            shape = inputs.shape
            node_inputs = [inputs]
        else:
            shape = [t.shape for t in inputs]
            node_inputs = list(inputs)
        # input_shape keeps a merging layer's shapes as a tuple; the shapes of this call are a list
        if self.built and self.input_shape is not None and tuple(shape) != tuple(self.input_shape):
            raise ValueError(f"Layer {self.name!r} was built for inputs of shape {self.input_shape} "
                             f"but is called on {shape}")
        self.check_input_shape(shape)
        self._build_once(shape)
        out = KerasTensor(self.compute_output_shape(shape), self.dtype, name=self.name)
        out.node = Node(self, node_inputs, out)
        return out

    # --- regularization ------------------------------------------------------------------------

    def regularization_loss(self):
        """Sum of the weight penalties plus the activity penalty of the last forward call."""
        total = 0.0
        for name, reg in self._regularizers.items():
            total += float(reg(self.params[name]))
        return total + self._activity_loss

    def add_regularization_gradients(self):
        """grads[name] += d(penalty)/d(param) for every regularized weight."""
        for name, reg in self._regularizers.items():
            self.grads[name] += reg.gradient(self.params[name])

    def activity_forward(self, y):
        """Record the activity penalty reg(y) / batch of output y (Keras divides by the batch size)."""
        if self.activity_regularizer is not None:
            self._activity_loss = float(self.activity_regularizer(y)) / y.shape[0]

    def activity_backward(self, dy, y):
        """dy + d(activity penalty)/dy, as a new array (dy itself is not modified)."""
        if self.activity_regularizer is None:
            return dy
        return dy + self.activity_regularizer.gradient(y) / y.dtype.type(y.shape[0])

    # --- weights -------------------------------------------------------------------------------

    @property
    def weights(self):
        return list(self.params.values())

    @property
    def trainable_names(self):
        """Names of the weights the optimizer updates: none if the layer is frozen (trainable=False)."""
        return [n for n in self.params if n not in self._non_trainable] if self.trainable else []

    @property
    def trainable_weights(self):
        return [self.params[n] for n in self.trainable_names]

    @property
    def non_trainable_weights(self):
        trainable = set(self.trainable_names)
        return [p for n, p in self.params.items() if n not in trainable]

    def get_weights(self):
        """Copies of the parameters, in Keras' order (kernel, then bias; non-trainable ones included)."""
        return [np.array(w, copy=True) for w in self.params.values()]

    def check_weights(self, weights):
        """The arrays ``set_weights(weights)`` would write, each cast to its parameter's dtype, without
        writing them. Raises ValueError for a wrong count or shape, or a value that is NaN or Inf once
        cast (float64 1e39 becomes inf in float32)."""
        weights = list(weights)
        if len(weights) != len(self.params):
            raise ValueError(f"Layer {self.name!r} expects {len(self.params)} weight arrays, got {len(weights)}")
        cast = []
        for (name, p), w in zip(self.params.items(), weights):
            w = np.asarray(w)
            if w.shape != p.shape:
                raise ValueError(f"Layer {self.name!r} weight {name!r} has shape {p.shape}, got {w.shape}")
            with np.errstate(over="ignore", invalid="ignore"):   # an overflow is reported below
                value = w.astype(p.dtype, copy=False)
            if not np.all(np.isfinite(value)):
                cast_note = "" if w.dtype == p.dtype else f" once cast from {w.dtype} to the layer's {p.dtype}"
                raise ValueError(f"Layer {self.name!r} weight {name!r} contains NaN or Inf{cast_note}")
            cast.append(value)
        return cast

    def set_weights(self, weights):
        """Copy values into the parameters, all or nothing: every array is checked (count, shape,
        finite in the layer's dtype; see ``check_weights``) before any is written."""
        for p, w in zip(self.params.values(), self.check_weights(weights)):
            p[...] = w

    def count_params(self):
        return int(sum(p.size for p in self.params.values()))

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "dtype": self.dtype.name,
                "activity_regularizer": regularizers.serialize(self.activity_regularizer)}

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


class InputLayer(Layer):
    """The entry of a graph: holds the input shape and passes data through."""

    def __init__(self, shape=None, batch_size=None, dtype=None, name=None, **kwargs):
        super().__init__(name=name or unique_name("input_layer"), dtype=dtype, **kwargs)
        if shape is None:
            raise ValueError("Input needs a shape, e.g. Input(shape=(28, 28, 1))")
        if isinstance(shape, (int, np.integer)):
            shape = (shape,)
        shape = tuple(shape)
        if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and 0 < d < 2**31 for d in shape):
            raise ValueError(f"Input shape must be a tuple of positive ints below 2**31 (without the batch size), "
                             f"got {shape!r}")
        self.batch_shape = (batch_size,) + tuple(int(d) for d in shape)
        self.built = True
        self.input_shape = self.output_shape = (None,) + self.batch_shape[1:]
        self.output = KerasTensor(self.output_shape, self.dtype, name=self.name)
        self.output.node = Node(self, [], self.output)

    def forward(self, x, training=False):
        return x

    def backward(self, dy):
        return dy


def Input(shape=None, batch_size=None, dtype=None, name=None, batch_shape=None):
    """A symbolic input tensor of shape (None, *shape), as ``keras.Input``."""
    if batch_shape is not None:
        batch_size, shape = batch_shape[0], tuple(batch_shape[1:])
    return InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, name=name).output
