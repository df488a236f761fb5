"""A denoising autoencoder: noisy digits in, clean digits out.

The seed post concludes that the bottleneck "rejects noise from the input". Here that is the
training task: the inputs are digits with Gaussian noise added (clipped to [0, 1]), the targets the
clean digits, so the seed's architecture must learn what a stroke looks like to undo the noise.

    python examples/denoising_autoencoder.py            # synthetic digits, about a minute
    python examples/denoising_autoencoder.py --mnist --limit 0 --epochs 10

Writes denoised.png (noisy / denoised / clean rows) and loss.png into --out.
"""
import argparse
import os

import numpy as np

import autoenc
from autoenc import plotting
from autoenc.datasets import load_images


def add_noise(x, noise_factor, rng):
    """x + noise_factor * N(0, 1), clipped to [0, 1]; x of shape (n, 28, 28, 1)."""
    return np.clip(x + noise_factor * rng.standard_normal(x.shape).astype("float32"), 0.0, 1.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", action="store_true", help="use real MNIST instead of synthetic digits")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=6000, help="training images, 0 for all (default 6000)")
    parser.add_argument("--noise", type=float, default=0.5, help="noise standard deviation (default 0.5)")
    parser.add_argument("--out", default="examples_out/denoising")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    autoenc.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_train, x_test = load_images(args.mnist, args.limit)
    noisy_train, noisy_test = add_noise(x_train, args.noise, rng), add_noise(x_test, args.noise, rng)

    model = autoenc.models.seed_autoencoder()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["mse"])
    history = model.fit(noisy_train, x_train, epochs=args.epochs, batch_size=128, shuffle=True,
                        validation_data=(noisy_test, x_test))
    denoised = model.predict(noisy_test[:10])
    print(f"MSE to the clean digits: noisy input {np.mean((noisy_test - x_test) ** 2):.4f}, "
          f"denoised {np.mean((model.predict(noisy_test) - x_test) ** 2):.4f}")

    os.makedirs(args.out, exist_ok=True)
    plotting.plot_image_rows({"noisy": noisy_test, "denoised": denoised, "clean": x_test},
                             os.path.join(args.out, "denoised.png"),
                             title=f"denoising autoencoder, noise {args.noise}")
    plotting.plot_history(history, os.path.join(args.out, "loss.png"))
    print(f"Wrote denoised.png and loss.png to {args.out}")


if __name__ == "__main__":
    main()
