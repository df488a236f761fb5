"""UpSampling2D: nearest-neighbour upsampling over NHWC inputs."""
from autoenc.kernels.upsampling import UpSample2DKernels
from autoenc.layers.base import Layer
from autoenc.utils import check_data_format, normalize_tuple


class UpSampling2D(Layer):
    """y[n, r, q, c] = x[n, r // sh, q // sw, c]. Input (batch, h, w, c); output (batch, h*sh, w*sw, c)."""

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        self.size = normalize_tuple(size, 2, "size")
        check_data_format(data_format, "UpSampling2D")
        if interpolation != "nearest":
            raise ValueError(f"UpSampling2D supports interpolation='nearest' only, got {interpolation!r}")
        self._kernels = UpSample2DKernels(self.size)

    def check_input_shape(self, shape):
        if not isinstance(shape, tuple) or len(shape) != 4:
            raise ValueError(f"UpSampling2D {self.name!r} expects input (batch, height, width, channels), got {shape}")

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return n, h * self.size[0], w * self.size[1], c

    def forward(self, x, training=False):
        """x: (batch, h, w, c) -> y: (batch, h*sh, w*sw, c), every pixel repeated sh x sw times."""
        return self._kernels.forward(x)

    def backward(self, dy):
        """dy: (batch, h*sh, w*sw, c) -> dx[n, r, q, c], the sum of dy over the sh x sw block that pixel
        (r, q) was copied to."""
        return self._kernels.backward(dy)

    def get_config(self):
        return {**super().get_config(), "size": self.size}
