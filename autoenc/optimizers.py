"""Optimizers with Keras 3's update rules, defaults and names.

``optimizer.apply(grads, params)`` updates each parameter array in place. The model keeps all its
parameters in one flat buffer, so one call updates everything. All arithmetic stays in the
parameters' dtype (float32), as in Keras.
See docs/adam.md.
"""
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
    """Base class: keeps per-parameter state ('slots') and the step count ``iterations``."""

    def __init__(self, learning_rate=0.001, name=None):
        _check_positive(learning_rate, "learning_rate")
        self.learning_rate = float(learning_rate)
        self.iterations = 0
        self.name = name or type(self).__name__.lower()
        self._slots = None

    def _build(self, params):
        self._slots = [self.make_slots(p) for p in params]

    def make_slots(self, p):
        return {}

    def apply(self, grads, params):
        """One update of every parameter array (in place) from its gradient."""
        grads, params = list(grads), list(params)
        if self._slots is None or len(self._slots) != len(params) or any(
                s and next(iter(s.values())).shape != p.shape for s, p in zip(self._slots, params)):
            self._build(params)
        for g, p, s in zip(grads, params, self._slots):
            self.update(p, g, s)
        self.iterations += 1

    # Keras' spelling
    def apply_gradients(self, grads_and_vars):
        grads, params = zip(*grads_and_vars)
        self.apply(grads, params)

    def get_config(self):
        return {"learning_rate": self.learning_rate}

    def get_state(self):
        """The step count and every slot array, for saving."""
        return {"iterations": self.iterations, "slots": self._slots}

    def set_state(self, state):
        self.iterations = int(state["iterations"])
        self._slots = state["slots"]


class SGD(Optimizer):
    """Without momentum: w -= lr g. With momentum: m = momentum m - lr g; w += m, or with nesterov
    w += momentum m - lr g."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name=None):
        super().__init__(learning_rate, name)
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

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, name=None):
        super().__init__(learning_rate, name)
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

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, name=None):
        super().__init__(learning_rate, name)
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


def _check_positive(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


_BY_NAME = {"adam": Adam, "sgd": SGD, "rmsprop": RMSprop}


def get(identifier):
    """An Optimizer from a name ('adam', 'sgd', 'rmsprop', with Keras' defaults) or an instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(f"Unknown optimizer {identifier!r}; expected one of {sorted(_BY_NAME)} "
                     "or an autoenc.optimizers.Optimizer")
