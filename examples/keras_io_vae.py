"""keras-io's "Variational AutoEncoder" (fchollet, 2020; keras-io examples/generative/vae.py), run on autoenc.

The script is keras-io's with the imports changed from keras to autoenc and its two TensorFlow classes
swapped for autoenc's: ``Sampling`` (autoenc.layers.Sampling: the same z = z_mean + exp(0.5 z_log_var) eps,
with its gradient written out) and ``VAE`` (autoenc.models.VAE: the same train_step, loss = reconstruction
+ KL, without a GradientTape). Four changes to run anywhere: the data can be shrunk (--limit; synthetic
digits from autoenc.datasets.digits unless --mnist), the epochs set (--epochs, keras-io trains 30), the
grid of decoded digits too (--grid, keras-io's 30 by 30), and the two plots are saved into --out instead
of opened in a window (plt.show()).

    python examples/keras_io_vae.py                        # synthetic digits, a few minutes
    python examples/keras_io_vae.py --mnist --limit 0 --epochs 30

Writes latent_space.png and label_clusters.png into --out.
"""
import argparse
import os

import matplotlib

matplotlib.use("Agg")   # the plots write PNG files

import numpy as np  # noqa: E402

from autoenc import layers  # noqa: E402  (keras-io: from tensorflow.keras import layers)
from autoenc import models as keras  # noqa: E402  (keras-io: from tensorflow import keras; keras.Model, keras.Input)
from autoenc import optimizers  # noqa: E402  (keras-io: keras.optimizers)
from autoenc.datasets import digits, mnist  # noqa: E402  (keras-io: keras.datasets.mnist)
from autoenc.layers import Sampling  # noqa: E402  (keras-io defines class Sampling(layers.Layer) with tf ops)
from autoenc.models import VAE  # noqa: E402  (keras-io defines class VAE(keras.Model) with a GradientTape)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--mnist", action="store_true", help="use real MNIST instead of synthetic digits")
parser.add_argument("--limit", type=int, default=6000, help="training images, 0 for all (default 6000)")
parser.add_argument("--epochs", type=int, default=5, help="epochs (keras-io: 30)")
parser.add_argument("--grid", type=int, default=30, help="digits per side of the latent-space grid (keras-io: 30)")
parser.add_argument("--out", default="examples_out/keras_io_vae")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)


def load_data():
    """keras.datasets.mnist.load_data(), or synthetic digits of the same shapes, shrunk to --limit."""
    if args.mnist:
        (x_train, y_train), (x_test, y_test) = mnist.load_data()
    else:
        n = args.limit or 60000
        (x_train, y_train), (x_test, y_test) = digits.load_data(n_train=n, n_test=max(10, n // 6),
                                                                cache=not args.limit)
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
        x_test, y_test = x_test[:max(10, args.limit // 6)], y_test[:max(10, args.limit // 6)]
    return (x_train, y_train), (x_test, y_test)


"""
## Build the encoder
"""

latent_dim = 2

encoder_inputs = layers.Input(shape=(28, 28, 1))
x = layers.Conv2D(32, 3, activation="relu", strides=2, padding="same")(encoder_inputs)
x = layers.Conv2D(64, 3, activation="relu", strides=2, padding="same")(x)
x = layers.Flatten()(x)
x = layers.Dense(16, activation="relu")(x)
z_mean = layers.Dense(latent_dim, name="z_mean")(x)
z_log_var = layers.Dense(latent_dim, name="z_log_var")(x)
z = Sampling()([z_mean, z_log_var])
encoder = keras.Model(encoder_inputs, [z_mean, z_log_var, z], name="encoder")
encoder.summary()

"""
## Build the decoder
"""

latent_inputs = layers.Input(shape=(latent_dim,))
x = layers.Dense(7 * 7 * 64, activation="relu")(latent_inputs)
x = layers.Reshape((7, 7, 64))(x)
x = layers.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(x)
x = layers.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(x)
decoder_outputs = layers.Conv2DTranspose(1, 3, activation="sigmoid", padding="same")(x)
decoder = keras.Model(latent_inputs, decoder_outputs, name="decoder")
decoder.summary()

"""
## Train the VAE
"""

(x_train, _), (x_test, _) = load_data()
mnist_digits = np.concatenate([x_train, x_test], axis=0)
mnist_digits = np.expand_dims(mnist_digits, -1).astype("float32") / 255

vae = VAE(encoder, decoder)
vae.compile(optimizer=optimizers.Adam())
vae.fit(mnist_digits, epochs=args.epochs, batch_size=128)

"""
## Display a grid of sampled digits
"""

import matplotlib.pyplot as plt  # noqa: E402


def plot_latent_space(vae, n=30, figsize=15):
    # display a n*n 2D manifold of digits
    digit_size = 28
    scale = 1.0
    figure = np.zeros((digit_size * n, digit_size * n))
    # linearly spaced coordinates corresponding to the 2D plot
    # of digit classes in the latent space
    grid_x = np.linspace(-scale, scale, n)
    grid_y = np.linspace(-scale, scale, n)[::-1]

    for i, yi in enumerate(grid_y):
        for j, xi in enumerate(grid_x):
            z_sample = np.array([[xi, yi]])
            x_decoded = vae.decoder.predict(z_sample, verbose=0)
            digit = x_decoded[0].reshape(digit_size, digit_size)
            figure[
                i * digit_size : (i + 1) * digit_size,
                j * digit_size : (j + 1) * digit_size,
            ] = digit

    plt.figure(figsize=(figsize, figsize))
    start_range = digit_size // 2
    end_range = n * digit_size + start_range
    pixel_range = np.arange(start_range, end_range, digit_size)
    sample_range_x = np.round(grid_x, 1)
    sample_range_y = np.round(grid_y, 1)
    plt.xticks(pixel_range, sample_range_x)
    plt.yticks(pixel_range, sample_range_y)
    plt.xlabel("z[0]")
    plt.ylabel("z[1]")
    plt.imshow(figure, cmap="Greys_r")
    plt.savefig(os.path.join(args.out, "latent_space.png"))   # keras-io: plt.show()
    plt.close()


plot_latent_space(vae, n=args.grid)

"""
## Display how the latent space clusters different digit classes
"""


def plot_label_clusters(vae, data, labels):
    # display a 2D plot of the digit classes in the latent space
    z_mean, _, _ = vae.encoder.predict(data, verbose=0)
    plt.figure(figsize=(12, 10))
    plt.scatter(z_mean[:, 0], z_mean[:, 1], c=labels)
    plt.colorbar()
    plt.xlabel("z[0]")
    plt.ylabel("z[1]")
    plt.savefig(os.path.join(args.out, "label_clusters.png"))   # keras-io: plt.show()
    plt.close()


(x_train, y_train), _ = load_data()
x_train = np.expand_dims(x_train, -1).astype("float32") / 255

plot_label_clusters(vae, x_train, y_train)
print(f"Wrote latent_space.png and label_clusters.png to {args.out}")
