"""A fully connected autoencoder: Flatten, Dense, Dropout, Reshape (the layers the post imports but
does not use).

784 pixels -> 128 -> 32 (the code) -> 128 -> 784 -> 28x28x1, with dropout after the first layer.
Dense layers are matrix products, so this trains much faster than the convolutional seed.

    python examples/dense_autoencoder.py                # synthetic digits, well under a minute
    python examples/dense_autoencoder.py --mnist --limit 0 --epochs 20

Writes reconstructions.png, model.png and loss.png into --out.
"""
import argparse
import os

import autoenc
from autoenc import plotting
from autoenc.datasets import load_images
from autoenc.layers import Dense, Dropout, Flatten, Input, Reshape
from autoenc.models import Sequential


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", action="store_true", help="use real MNIST instead of synthetic digits")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--limit", type=int, default=12000, help="training images, 0 for all (default 12000)")
    parser.add_argument("--code", type=int, default=32, help="size of the code (default 32)")
    parser.add_argument("--out", default="examples_out/dense")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    autoenc.set_random_seed(args.seed)
    x_train, x_test = load_images(args.mnist, args.limit)

    model = Sequential([
        Input(shape=(28, 28, 1)),
        Flatten(),
        Dense(128, activation="relu"),
        Dropout(0.2),
        Dense(args.code, activation="relu"),   # the code
        Dense(128, activation="relu"),
        Dense(784, activation="sigmoid"),
        Reshape((28, 28, 1)),
    ])
    model.summary()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["mse"])
    history = model.fit(x_train, x_train, epochs=args.epochs, batch_size=128, shuffle=True,
                        validation_data=(x_test, x_test))

    os.makedirs(args.out, exist_ok=True)
    plotting.plot_reconstructions(x_test, model.predict(x_test[:10]), os.path.join(args.out, "reconstructions.png"),
                                  title=f"dense autoencoder, code of {args.code}")
    plotting.plot_model(model, os.path.join(args.out, "model.png"))
    plotting.plot_history(history, os.path.join(args.out, "loss.png"))
    print(f"Wrote reconstructions.png, model.png and loss.png to {args.out}")


if __name__ == "__main__":
    main()
