"""The variational autoencoder of keras-io's ``examples/generative/vae.py``, with its names.

    z_mean, z_log_var, z = encoder(x)        z = z_mean + exp(0.5 z_log_var) eps  (layers.Sampling)
    reconstruction       = decoder(z)
    reconstruction_loss  = mean over the batch of the sum over pixels of binary crossentropy
    kl_loss              = mean over the batch of sum_j -0.5 (1 + z_log_var_j - z_mean_j^2 - exp(z_log_var_j))
    loss                 = reconstruction_loss + beta * kl_loss

One training step runs the two sub-models forward, takes both losses and their gradients
(``compute_loss_and_gradient``), backpropagates the reconstruction gradient through the decoder to
dL/dz, then [dL/dz_mean, dL/dz_log_var, dL/dz] (the KL gradients on the two heads, and dL/dz) through
the encoder, whose Sampling layer sends dL/dz on to both heads; then one optimizer update of every
weight (``apply_gradients``). The derivation is in docs/vae.md.
"""
import numpy as np

from autoenc import losses, optimizers
from autoenc.models.model import Model
from autoenc.models.training import NotCompiledError


class VAE(Model):
    """``VAE(encoder, decoder, beta=1.0)``: encoder a model of one input and three outputs
    [z_mean, z_log_var, z] (each (batch, latent)), decoder a model from (batch, latent) to the input's
    shape. ``compile(optimizer)`` needs no loss; ``fit(x, epochs, batch_size, validation_data=x_val)``
    needs no targets and logs ``loss``, ``reconstruction_loss`` and ``kl_loss``. ``vae(x)`` and
    ``vae.predict(x)`` are the reconstructions of a draw of z; ``vae.encoder`` and ``vae.decoder``
    stay usable models sharing the VAE's weights. beta weighs the KL term (beta-VAE; keras-io's is 1).
    """

    def __init__(self, encoder, decoder, beta=1.0, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        for what, m, n_out in (("encoder", encoder, 3), ("decoder", decoder, 1)):
            if not isinstance(m, Model):
                raise TypeError(f"VAE {what} must be an autoenc Model, got {type(m).__name__}")
            if m.built and len(m.outputs) != n_out:
                raise ValueError(f"VAE {what} must have {n_out} output(s)"
                                 f"{' [z_mean, z_log_var, z]' if n_out == 3 else ''}, got {len(m.outputs)}")
        if isinstance(beta, bool) or not isinstance(beta, (int, float, np.floating)) or not np.isfinite(beta) \
                or beta < 0:
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        self.encoder = encoder
        self.decoder = decoder
        self.beta = float(beta)
        if encoder.built:
            self.build(encoder.input_shape)

    def call(self, inputs, training=None):
        z_mean, z_log_var, z = self.encoder(inputs)
        return self.decoder(z)

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Choose the optimizer (name or instance). The loss is the VAE's own: ``loss`` and ``metrics``
        must be None."""
        if loss is not None or metrics:
            raise ValueError(f"VAE.compile takes no loss or metrics (its loss is reconstruction + beta * KL), "
                             f"got loss={loss!r}, metrics={metrics!r}")
        unsupported = {k for k, v in kwargs.items()
                       if k not in ("run_eagerly", "jit_compile", "steps_per_execution", "auto_scale_loss")}
        if unsupported:
            raise TypeError(f"compile got unexpected keyword argument(s): {sorted(unsupported)}")
        self.optimizer = optimizers.get(optimizer)
        self.loss, self.metrics, self.compiled = None, [], True

    def _require_compiled(self, what):
        if not self.compiled:
            raise NotCompiledError(f"You must call compile(optimizer) before {what}()")

    # --- the loss -------------------------------------------------------------------------------

    def compute_loss_and_gradient(self, x, y_pred):
        """The logs and gradients of the last forward pass on x (batch, *input_shape).

        y_pred : [z_mean, z_log_var, reconstruction] of that pass ((batch, latent) twice, x's shape).
        Returns (logs, [d_z_mean, d_z_log_var, d_reconstruction], from_logits): logs {"loss",
        "reconstruction_loss", "kl_loss"} (floats; loss includes any regularization penalty); the
        gradients of the loss with respect to the two heads (KL only: the path through z is the
        decoder's and Sampling's) and to the reconstruction, or with ``from_logits`` to the decoder
        output layer's pre-activation (binary crossentropy after a sigmoid, as Keras' TensorFlow
        backend takes it)."""
        z_mean, z_log_var, reconstruction = y_pred
        logits = self.decoder.logits if self.decoder._output_is_sigmoid() else None
        grad = self._loss_grad
        if grad is None or grad.shape != reconstruction.shape or grad.dtype != reconstruction.dtype:
            grad = self._loss_grad = np.empty_like(reconstruction)
        recon, d_out = losses.reconstruction_crossentropy(x, reconstruction, logits=logits, out=grad)
        kl, d_mean, d_log_var = losses.kl_divergence_and_gradient(z_mean, z_log_var)
        beta = z_mean.dtype.type(self.beta)
        d_mean *= beta
        d_log_var *= beta
        loss = recon + self.beta * kl + self._regularization_loss()
        logs = {"loss": loss, "reconstruction_loss": recon, "kl_loss": kl}
        return logs, [d_mean, d_log_var, d_out], logits is not None

    def compute_loss(self, x=None, y=None, y_pred=None):
        """The total loss (reconstruction + beta KL + penalties) of the last forward pass on x, whose
        y_pred was [z_mean, z_log_var, reconstruction] (see compute_loss_and_gradient); y is unused."""
        return self._losses(x, y_pred)["loss"]

    def _losses(self, x, y_pred):
        z_mean, z_log_var, reconstruction = y_pred
        logits = self.decoder.logits if self.decoder._output_is_sigmoid() else None
        recon = losses.reconstruction_crossentropy(x, reconstruction, logits=logits)[0]
        kl = losses.kl_divergence(z_mean, z_log_var)
        return {"loss": recon + self.beta * kl + self._regularization_loss(), "reconstruction_loss": recon,
                "kl_loss": kl}

    # --- steps ------------------------------------------------------------------------------------

    def forward_all(self, x, training=False):
        """Both sub-models forward on x: returns [z_mean, z_log_var, z, reconstruction] (layer buffers)."""
        z_mean, z_log_var, z = self.encoder.forward(x, training=training)
        return [z_mean, z_log_var, z, self.decoder.forward(z, training=training)]

    def train_step(self, data):
        """One step of keras-io's VAE on a batch x (data is x, or a tuple whose first entry is x)."""
        x = data[0] if isinstance(data, tuple) else data
        z_mean, z_log_var, z, reconstruction = self.forward_all(x, training=True)
        logs, (d_mean, d_log_var, d_out), from_logits = self.compute_loss_and_gradient(
            x, [z_mean, z_log_var, reconstruction])
        dz = self.decoder.backward(d_out, from_logits=from_logits)          # dL/dz through the decoder
        self.encoder.backward([d_mean, d_log_var, dz], input_gradients=False)   # Sampling, the two heads
        self.apply_gradients()
        return logs

    def test_step(self, data):
        """The logs of a batch x without updating (z is drawn, as keras-io's Sampling always does)."""
        x = data[0] if isinstance(data, tuple) else data
        z_mean, z_log_var, z, reconstruction = self.forward_all(x, training=False)
        return self._losses(x, [z_mean, z_log_var, reconstruction])

    # --- architecture -------------------------------------------------------------------------

    def get_config(self):
        """The traced graph (input -> encoder -> its output z -> decoder), with class_name "VAE" and beta:
        ``autoenc.models.load_model`` rebuilds a VAE from it."""
        return {**super().get_config(), "class_name": "VAE", "beta": self.beta}

    @classmethod
    def from_config(cls, config, custom_objects=None, on_layer=None):
        """The VAE described by get_config()'s dict, its encoder and decoder rebuilt (untrained)."""
        config = dict(config)
        beta = config.pop("beta", 1.0)
        config["class_name"] = "Model"
        graph = Model.from_config(config, custom_objects, on_layer=on_layer)
        subs = [layer for layer in graph.layers if isinstance(layer, Model)]
        if len(subs) != 2:
            raise ValueError(f"a VAE architecture holds an encoder and a decoder model, got {len(subs)} models")
        return cls(subs[0], subs[1], beta=beta, name=config.get("name"))


def keras_io_vae(latent_dim=2, beta=1.0):
    """keras-io's convolutional VAE for 28x28x1 images, built with autoenc's layers: the encoder
    Conv2D(32, 3, strides 2) - Conv2D(64, 3, strides 2) - Flatten - Dense(16) - Dense(latent_dim) twice
    (z_mean, z_log_var) - Sampling; the decoder Dense(7*7*64) - Reshape - Conv2DTranspose(64, 3,
    strides 2) - Conv2DTranspose(32, 3, strides 2) - Conv2DTranspose(1, 3, sigmoid). ReLU inside."""
    from autoenc import layers
    encoder_inputs = layers.Input(shape=(28, 28, 1))
    x = layers.Conv2D(32, 3, activation="relu", strides=2, padding="same")(encoder_inputs)
    x = layers.Conv2D(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(16, activation="relu")(x)
    z_mean = layers.Dense(latent_dim, name="z_mean")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(x)
    z = layers.Sampling()([z_mean, z_log_var])
    encoder = Model(encoder_inputs, [z_mean, z_log_var, z], name="encoder")
    latent_inputs = layers.Input(shape=(latent_dim,))
    x = layers.Dense(7 * 7 * 64, activation="relu")(latent_inputs)
    x = layers.Reshape((7, 7, 64))(x)
    x = layers.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(x)
    decoder_outputs = layers.Conv2DTranspose(1, 3, activation="sigmoid", padding="same")(x)
    decoder = Model(latent_inputs, decoder_outputs, name="decoder")
    return VAE(encoder, decoder, beta=beta)
