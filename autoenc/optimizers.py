"""Optimizers with Keras 3's update rules, defaults and names.

``optimizer.apply(grads, params)`` updates each parameter array in place. The model keeps all its
parameters in one flat buffer, so one call updates everything. All arithmetic stays in the
parameters' dtype (float32), as in Keras.

Every optimizer also takes Keras' base arguments: ``weight_decay`` (w -= w wd lr before each update),
``clipnorm`` (each variable's gradient scaled to norm <= clipnorm), ``global_clipnorm`` (all of them
together) and ``clipvalue`` (each entry clipped to [-clipvalue, clipvalue]); and Keras 2's ``lr=``,
with a DeprecationWarning.
See docs/adam.md and docs/optimizers.md.
"""
import warnings

import numpy as np

from autoenc.kernels.config import njit


@njit()   # numba.njit(cache=True), robust to an unwritable or damaged cache
def adam_update(w, g, m, v, alpha, c1, c2, epsilon):
    """m += (g - m) c1; v += (g^2 - v) c2; w -= alpha m / (sqrt(v) + eps), with c1 = 1 - beta_1 and
    c2 = 1 - beta_2. w, g, m, v: 1-D arrays of one size; the scalars of their dtype."""
    for k in range(w.size):
        gk = g[k]
        m[k] += (gk - m[k]) * c1
        v[k] += (gk * gk - v[k]) * c2
        w[k] -= (m[k] * alpha) / (np.sqrt(v[k]) + epsilon)


class Optimizer:
    """Base class: keeps per-parameter state ('slots') and the step count ``iterations``.

    ``variable_sizes``: when one flat buffer holds several variables (a model's parameters), the sizes of
    its consecutive variables, so that ``clipnorm`` clips each one as Keras does; the model sets it.
    """

    def __init__(self, learning_rate=0.001, name=None, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, **kwargs):
        if "lr" in kwargs:
            warnings.warn(f"{type(self).__name__}(lr=...) is Keras 2's spelling; use learning_rate=... (Keras 3)",
                          DeprecationWarning, stacklevel=3)
            learning_rate = kwargs.pop("lr")
        if kwargs.pop("decay", None) is not None:  # as Keras 3: a warning, and no decay
            warnings.warn("Argument `decay` is no longer supported and will be ignored (as in Keras 3); use a "
                          "learning-rate schedule callback instead", stacklevel=3)
        unsupported = {k: v for k, v in kwargs.items() if k in _KERAS_ONLY and v not in (None, False, _KERAS_ONLY[k])}
        if unsupported:
            raise ValueError(f"{type(self).__name__}: {unsupported} not supported by autoenc (it supports "
                             "weight_decay, clipnorm, clipvalue and global_clipnorm)")
        unknown = sorted(set(kwargs) - set(_KERAS_ONLY))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument(s): {unknown}")
        _check_positive(learning_rate, "learning_rate")
        for value, n in ((weight_decay, "weight_decay"), (clipnorm, "clipnorm"), (clipvalue, "clipvalue"),
                         (global_clipnorm, "global_clipnorm")):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))
                                      or not np.isfinite(value) or value < 0):
                raise ValueError(f"{n} must be a non-negative number or None, got {n}={value!r}")
        if sum(a is not None for a in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError("Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: "
                             f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}")
        self.learning_rate = float(learning_rate)
        self.weight_decay = None if weight_decay is None else float(weight_decay)
        self.clipnorm = None if clipnorm is None else float(clipnorm)
        self.clipvalue = None if clipvalue is None else float(clipvalue)
        self.global_clipnorm = None if global_clipnorm is None else float(global_clipnorm)
        self.iterations = 0
        self.name = name or type(self).__name__.lower()
        self.variable_sizes = None
        self._slots = None
        self._clipped = []

    def _build(self, params):
        self._slots = [self.make_slots(p) for p in params]

    def make_slots(self, p):
        return {}

    def apply(self, grads, params):
        """One update of every parameter array (in place) from its gradient: clip the gradients, decay
        the weights, then the optimizer's own rule (Keras' order)."""
        grads, params = list(grads), list(params)
        if self._slots is None or len(self._slots) != len(params) or any(
                s and next(iter(s.values())).shape != p.shape for s, p in zip(self._slots, params)):
            self._build(params)
        grads = self._clip_gradients(grads)
        if self.weight_decay:
            for p in params:
                t = p.dtype.type
                p -= p * t(self.weight_decay) * t(self.learning_rate)
        for g, p, s in zip(grads, params, self._slots):
            self.update(p, g, s)
        self.iterations += 1

    def _clip_gradients(self, grads):
        """Keras' clipping, into buffers kept between steps (the incoming gradients are not modified)."""
        if not (self.clipnorm or self.global_clipnorm or self.clipvalue):
            return grads
        if len(self._clipped) != len(grads) or any(b.shape != g.shape or b.dtype != g.dtype
                                                   for b, g in zip(self._clipped, grads)):
            self._clipped = [np.empty_like(g) for g in grads]
        out = self._clipped
        if self.clipnorm:
            for g, o in zip(grads, out):
                sizes = self.variable_sizes if self.variable_sizes and sum(self.variable_sizes) == g.size \
                    else [g.size]
                offset = 0
                for n in sizes:
                    _clip_by_norm(g.reshape(-1)[offset:offset + n], self.clipnorm, o.reshape(-1)[offset:offset + n])
                    offset += n
        elif self.global_clipnorm:
            t = grads[0].dtype.type
            norm = np.sqrt(sum(np.sum(np.square(g)) for g in grads), dtype=grads[0].dtype)
            c = t(self.global_clipnorm)
            # scale = c min(1 / norm, 1 / c): 1 when the norm is within c; NaN when it is not finite
            scale = c * np.minimum(t(1) / norm, t(1) / c) + (norm - norm)
            for g, o in zip(grads, out):
                np.multiply(g, scale, out=o)
        else:
            v = grads[0].dtype.type(self.clipvalue)
            for g, o in zip(grads, out):
                np.clip(g, -v, v, out=o)
        return out

    # Keras' spelling
    def apply_gradients(self, grads_and_vars):
        grads, params = zip(*grads_and_vars)
        self.apply(grads, params)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "weight_decay": self.weight_decay, "clipnorm": self.clipnorm,
                "clipvalue": self.clipvalue, "global_clipnorm": self.global_clipnorm}

    def get_state(self):
        """The step count and every slot array, for saving."""
        return {"iterations": self.iterations, "slots": self._slots}

    def set_state(self, state):
        self.iterations = int(state["iterations"])
        self._slots = state["slots"]


# Keras' base-optimizer arguments autoenc does not implement, with their defaults (accepted when left so)
_KERAS_ONLY = {"use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None, "loss_scale_factor": None,
               "gradient_accumulation_steps": None}


def _clip_by_norm(g, clipnorm, out):
    """out = g clipnorm / max(||g||, clipnorm), as Keras (so g is rescaled even when within the norm)."""
    t = g.dtype.type
    l2sum = np.sum(np.square(g))
    norm = np.sqrt(l2sum) if l2sum > 0 else l2sum
    np.multiply(g, t(clipnorm), out=out)
    out /= np.maximum(norm, t(clipnorm))


class SGD(Optimizer):
    """Without momentum: w -= lr g. With momentum: m = momentum m - lr g; w += m, or with nesterov
    w += momentum m - lr g."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name=None, **kwargs):
        super().__init__(learning_rate, name, **kwargs)
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def make_slots(self, p):
        return {"momentum": np.zeros_like(p)} if self.momentum else {}

    def update(self, w, g, s):
        lr = w.dtype.type(self.learning_rate)
        if not self.momentum:
            w -= lr * g
            return
        mom = w.dtype.type(self.momentum)
        m = s["momentum"]
        m *= mom
        m -= lr * g
        if self.nesterov:
            w += mom * m - lr * g
        else:
            w += m

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class RMSprop(Optimizer):
    """v = rho v + (1 - rho) g^2; step = lr g / sqrt(v + eps) (centred: v - mean_g^2 + eps);
    with momentum: m = momentum m + step, w -= m; else w -= step."""

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, name=None,
                 **kwargs):
        super().__init__(learning_rate, name, **kwargs)
        self.rho, self.momentum, self.epsilon, self.centered = float(rho), float(momentum), float(epsilon), bool(centered)

    def make_slots(self, p):
        s = {"velocity": np.zeros_like(p)}
        if self.momentum:
            s["momentum"] = np.zeros_like(p)
        if self.centered:
            s["average_gradient"] = np.zeros_like(p)
        return s

    def update(self, w, g, s):
        t = w.dtype.type
        rho, lr, eps = t(self.rho), t(self.learning_rate), t(self.epsilon)
        v = s["velocity"]
        v[...] = rho * v + (1 - rho) * g * g
        if self.centered:
            a = s["average_gradient"]
            a[...] = rho * a + (1 - rho) * g
            denominator = v - a * a + eps
        else:
            denominator = v + eps
        step = lr * g / np.sqrt(denominator)
        if self.momentum:
            m = s["momentum"]
            m[...] = t(self.momentum) * m + step
            w -= m
        else:
            w -= step

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered}


class Adam(Optimizer):
    """Keras 3's Adam: alpha = lr sqrt(1 - b2^t) / (1 - b1^t); m += (g - m)(1 - b1);
    v += (g^2 - v)(1 - b2); w -= alpha m / (sqrt(v) + eps)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, name=None,
                 **kwargs):
        super().__init__(learning_rate, name, **kwargs)
        if amsgrad:
            raise ValueError("Adam(amsgrad=True) is not supported")
        for v, n in ((beta_1, "beta_1"), (beta_2, "beta_2")):
            if not 0 <= v < 1:
                raise ValueError(f"{n} must be in [0, 1), got {v!r}")
        _check_positive(epsilon, "epsilon")
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def make_slots(self, p):
        return {"m": np.zeros_like(p), "v": np.zeros_like(p)}

    def update(self, w, g, s):
        t = w.dtype.type
        step = t(self.iterations + 1)
        # as Keras' TensorFlow backend: the powers use beta cast through float32 (ops.cast of a Python
        # float), while 1 - beta is taken in double precision, then rounded (float32(1 - 0.999) is
        # 0.001, but float32(1) - float32(0.999) is 0.00099998713: a 6e-6 bias in every step)
        b1, b2 = t(np.float32(self.beta_1)), t(np.float32(self.beta_2))
        alpha = t(self.learning_rate) * np.sqrt(1 - b2 ** step) / (1 - b1 ** step)
        adam_update(w.reshape(-1), g.reshape(-1), s["m"].reshape(-1), s["v"].reshape(-1),
                    t(alpha), t(1 - self.beta_1), t(1 - self.beta_2), t(self.epsilon))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class Adadelta(Optimizer):
    """Keras 3's Adadelta: a = rho a + (1 - rho) g^2; d = -sqrt(b + eps) g / sqrt(a + eps);
    b = rho b + (1 - rho) d^2; w += lr d. (Keras 3's default learning_rate is 0.001; Keras 2's was 1.0.)"""

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, name=None, **kwargs):
        super().__init__(learning_rate, name, **kwargs)
        if not 0 <= rho <= 1:
            raise ValueError(f"rho must be in [0, 1], got rho={rho!r}")
        _check_positive(epsilon, "epsilon")
        self.rho, self.epsilon = float(rho), float(epsilon)

    def make_slots(self, p):
        return {"accumulated_grad": np.zeros_like(p), "accumulated_delta_var": np.zeros_like(p)}

    def update(self, w, g, s):
        t = w.dtype.type
        rho, one_minus_rho, eps = t(self.rho), t(1 - self.rho), t(self.epsilon)
        a, b = s["accumulated_grad"], s["accumulated_delta_var"]
        a[...] = rho * a + one_minus_rho * np.square(g)
        delta = -(np.sqrt(b + eps) * g) / np.sqrt(a + eps)
        b[...] = rho * b + one_minus_rho * np.square(delta)
        w += t(self.learning_rate) * delta

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}


class Adagrad(Optimizer):
    """Keras 3's Adagrad: a += g^2 (a starts at initial_accumulator_value); w -= lr g / sqrt(a + eps)."""

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, name=None, **kwargs):
        super().__init__(learning_rate, name, **kwargs)
        if isinstance(initial_accumulator_value, bool) or not isinstance(initial_accumulator_value, (int, float)) \
                or initial_accumulator_value < 0:
            raise ValueError("initial_accumulator_value must be a non-negative number, got "
                             f"{initial_accumulator_value!r}")
        _check_positive(epsilon, "epsilon")
        self.initial_accumulator_value, self.epsilon = float(initial_accumulator_value), float(epsilon)

    def make_slots(self, p):
        return {"accumulator": np.full_like(p, self.initial_accumulator_value)}

    def update(self, w, g, s):
        t = w.dtype.type
        a = s["accumulator"]
        a += np.square(g)
        w -= (t(self.learning_rate) * g) / np.sqrt(a + t(self.epsilon))

    def get_config(self):
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


class _Betas(Optimizer):
    """Shared by Adamax and Nadam: beta_1, beta_2 in [0, 1) and epsilon > 0."""

    def __init__(self, learning_rate, beta_1, beta_2, epsilon, name, **kwargs):
        super().__init__(learning_rate, name, **kwargs)
        for v, n in ((beta_1, "beta_1"), (beta_2, "beta_2")):
            if not 0 <= v < 1:
                raise ValueError(f"{n} must be in [0, 1), got {n}={v!r}")
        _check_positive(epsilon, "epsilon")
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def make_slots(self, p):
        return {"m": np.zeros_like(p), "v": np.zeros_like(p)}

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class Adamax(_Betas):
    """Keras 3's Adamax: m += (g - m)(1 - b1); u = max(b2 u, |g|); w -= lr m / ((1 - b1^t)(u + eps)).
    Slots m (Keras' 'momentum') and u (its 'norm')."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name=None, **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, name, **kwargs)

    def make_slots(self, p):
        return {"m": np.zeros_like(p), "u": np.zeros_like(p)}

    def update(self, w, g, s):
        t = w.dtype.type
        beta_1_power = t(np.float32(self.beta_1)) ** t(self.iterations + 1)
        m, u = s["m"], s["u"]
        m += (g - m) * t(1 - self.beta_1)
        np.maximum(t(self.beta_2) * u, np.abs(g), out=u)
        w -= (t(self.learning_rate) * m) / ((1 - beta_1_power) * (u + t(self.epsilon)))


class Nadam(_Betas):
    """Keras 3's Nadam, Adam with Nesterov momentum and Dozat's momentum schedule
    u_t = b1 (1 - 0.5 * 0.96^t), P_t = u_1 ... u_t ('u_product'):
        m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2)
        m_hat = u_{t+1} m / (1 - P_t u_{t+1}) + (1 - u_t) g / (1 - P_t);  v_hat = v / (1 - b2^t)
        w -= lr m_hat / (sqrt(v_hat) + eps)
    P_t is a function of the step count, recomputed (in the parameters' dtype, in Keras' order of
    roundings) when ``iterations`` changes other than by one step, e.g. after loading a saved model."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name=None, **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, name, **kwargs)
        self._u_product = None  # (step t, dtype, P_t)

    def u_product(self, step, dtype):
        """P_step = prod_{s=1..step} b1 (1 - 0.5 * 0.96^s), each product rounded to ``dtype`` as Keras'
        float32 variable is."""
        t = np.dtype(dtype).type
        start, value = 0, t(1)
        if self._u_product is not None and self._u_product[1] == np.dtype(dtype) and self._u_product[0] <= step:
            start, value = self._u_product[0], self._u_product[2]
        b1, decay = t(self.beta_1), t(0.96)
        for k in range(start + 1, step + 1):
            value = value * b1 * (t(1) - t(0.5) * decay ** t(k))
        self._u_product = (step, np.dtype(dtype), value)
        return value

    def update(self, w, g, s):
        t = w.dtype.type
        step = self.iterations + 1
        b1, b2, decay = t(np.float32(self.beta_1)), t(np.float32(self.beta_2)), t(np.float32(0.96))
        u_t = b1 * (t(1) - t(0.5) * decay ** t(step))
        u_t_1 = b1 * (t(1) - t(0.5) * decay ** t(step + 1))
        u_product_t = self.u_product(step, w.dtype)
        u_product_t_1 = u_product_t * u_t_1
        beta_2_power = b2 ** t(step)
        m, v = s["m"], s["v"]
        m += (g - m) * (t(1) - b1)
        v += (np.square(g) - v) * (t(1) - b2)
        m_hat = (u_t_1 * m) / (t(1) - u_product_t_1) + ((t(1) - u_t) * g) / (t(1) - u_product_t)
        v_hat = v / (t(1) - beta_2_power)
        w -= (m_hat * t(self.learning_rate)) / (np.sqrt(v_hat) + t(self.epsilon))


class AdamW(Adam):
    """Keras 3's AdamW: Adam after decoupled weight decay, w -= w weight_decay lr (Loshchilov and Hutter)."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, name=None, **kwargs):
        if weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: weight_decay=None")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, name, weight_decay=weight_decay, **kwargs)


def _check_positive(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


_BY_NAME = {"adam": Adam, "sgd": SGD, "rmsprop": RMSprop, "adadelta": Adadelta, "adagrad": Adagrad,
            "adamax": Adamax, "nadam": Nadam, "adamw": AdamW}


def get(identifier):
    """An Optimizer from a name ('adam', 'sgd', 'rmsprop', 'adadelta', 'adagrad', 'adamax', 'nadam', 'adamw',
    with Keras' defaults) or an instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(f"Unknown optimizer {identifier!r}; expected one of {sorted(_BY_NAME)} "
                     "or an autoenc.optimizers.Optimizer")
