"""A sparse autoencoder: an L1 activity regularizer on the bottleneck.

The seed's architecture, with ``activity_regularizer=regularizers.l1(...)`` on the bottleneck conv
(the post's ``encoded``): the training loss gets + l1 * sum|code| / batch, which pushes most of the
7x7x8 code to exactly zero (ReLU), so each digit is described by a few active units.

    python examples/sparse_autoencoder.py               # synthetic digits, about a minute
    python examples/sparse_autoencoder.py --mnist --limit 0 --epochs 10

Writes reconstructions.png, latent.png (the sparse codes) and loss.png into --out, and prints the
share of code units that are zero.
"""
import argparse
import os

import numpy as np

import autoenc
from autoenc import plotting, regularizers
from autoenc.datasets import load_images
from autoenc.layers import Conv2D, Input, MaxPooling2D, UpSampling2D
from autoenc.models import Model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", action="store_true", help="use real MNIST instead of synthetic digits")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=6000, help="training images, 0 for all (default 6000)")
    parser.add_argument("--l1", type=float, default=1e-4, help="activity penalty per unit (default 1e-4)")
    parser.add_argument("--out", default="examples_out/sparse")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    autoenc.set_random_seed(args.seed)
    x_train, x_test = load_images(args.mnist, args.limit)

    input_img = Input(shape=(28, 28, 1))
    x = Conv2D(16, (3, 3), activation="relu", padding="same")(input_img)
    x = MaxPooling2D((2, 2), padding="same")(x)
    x = Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    x = MaxPooling2D((2, 2), padding="same")(x)
    encoded = Conv2D(8, (3, 3), activation="relu", padding="same", name="encoded",
                     activity_regularizer=regularizers.l1(args.l1))(x)
    x = Conv2D(8, (3, 3), activation="relu", padding="same")(encoded)
    x = UpSampling2D((2, 2))(x)
    x = Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    x = UpSampling2D((2, 2))(x)
    x = Conv2D(16, (3, 3), activation="relu", padding="same")(x)
    decoded = Conv2D(1, (3, 3), activation="sigmoid", padding="same")(x)
    model = Model(input_img, decoded)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["mse"])
    history = model.fit(x_train, x_train, epochs=args.epochs, batch_size=128, shuffle=True,
                        validation_data=(x_test, x_test))

    # the codes: one forward pass, then read the bottleneck's output from the model's activations
    reconstructions = model.predict(x_test[:10], batch_size=10)
    codes = np.array(model.layer_output("encoded"), copy=True)
    print(f"bottleneck: {np.mean(codes == 0):.0%} of the {codes[0].size} code units are zero, "
          f"mean activation {codes.mean():.3f}")

    os.makedirs(args.out, exist_ok=True)
    plotting.plot_reconstructions(x_test, reconstructions, os.path.join(args.out, "reconstructions.png"),
                                  title=f"sparse autoencoder (L1 {args.l1:g} on the bottleneck)")
    plotting.plot_latent(codes[:5], os.path.join(args.out, "latent.png"), images=x_test[:5],
                         title=f"sparse codes: {np.mean(codes == 0):.0%} zeros")
    plotting.plot_history(history, os.path.join(args.out, "loss.png"))
    print(f"Wrote reconstructions.png, latent.png and loss.png to {args.out}")


if __name__ == "__main__":
    main()
