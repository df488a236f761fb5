"""TensorFlow's "Intro to Autoencoders" tutorial (tensorflow.org/tutorials/generative/autoencoder), its
three subclassed models run with autoenc: the basic Dense Autoencoder, the Denoise convolutional model
and the ECG AnomalyDetector.

The model classes, compile, fit, predict and the ``.numpy()`` calls are the tutorial's, with only the
imports changed (``tf.keras`` -> ``autoenc``). What else had to change, because autoenc is not TensorFlow:

- tensor operations on data are NumPy's: ``tf.math.reduce_prod(shape).numpy()`` -> ``int(np.prod(shape))``,
  ``tf.random.normal`` / ``tf.clip_by_value`` / ``tf.newaxis`` / ``tf.reduce_min`` / ``tf.cast`` /
  ``tf.math.less`` -> their ``np.`` twins, ``tf.keras.losses.mae`` -> ``autoenc.losses.mae``;
- scikit-learn's ``train_test_split`` and its accuracy / precision / recall are a few NumPy lines;
- the ECG5000 csv (downloaded with pandas in the tutorial) is replaced by synthetic ECG-like beats
  (``synthetic_ecg``), so the script runs offline; Fashion-MNIST falls back to autoenc's synthetic
  digits when it cannot be had (``--synthetic`` forces that);
- the data are shrunk (``--limit``) and the image models' epochs are fewer (``--epochs``).
- Denoise's decoder uses ``layers.Conv2DTranspose``; where this autoenc does not have it yet, each
  Conv2DTranspose(f, 3, strides=2, padding='same') is replaced by UpSampling2D(2) + Conv2D(f, 3,
  padding='same') (same shapes, different weights) and the script says so.

    python examples/tf_tutorial_autoencoders.py                     # Fashion-MNIST, 6000 images, 3 epochs
    python examples/tf_tutorial_autoencoders.py --synthetic --limit 240 --epochs 1

Writes basic.png, denoise.png and ecg_loss.png into --out.
"""
import argparse
import os

import numpy as np

import autoenc as tf   # the tutorial's `import tensorflow as tf`
from autoenc import layers, losses, plotting
from autoenc.datasets import digits, fashion_mnist
from autoenc.models import Model


# --- the tutorial's models (unchanged but for tf.math.reduce_prod) ---------------------------------

class Autoencoder(Model):
    def __init__(self, latent_dim, shape):
        super(Autoencoder, self).__init__()
        self.latent_dim = latent_dim
        self.shape = shape
        self.encoder = tf.Sequential([
            layers.Flatten(),
            layers.Dense(latent_dim, activation='relu'),
        ])
        self.decoder = tf.Sequential([
            layers.Dense(int(np.prod(shape)), activation='sigmoid'),
            layers.Reshape(shape)
        ])

    def call(self, x):
        encoded = self.encoder(x)
        decoded = self.decoder(encoded)
        return decoded


def conv2d_transpose(filters, kernel_size, strides, activation, padding):
    """layers.Conv2DTranspose where this autoenc has it, else UpSampling2D + Conv2D of the same shapes."""
    if hasattr(layers, "Conv2DTranspose"):
        return [layers.Conv2DTranspose(filters, kernel_size=kernel_size, strides=strides, activation=activation,
                                       padding=padding)]
    return [layers.UpSampling2D(strides), layers.Conv2D(filters, kernel_size, activation=activation, padding=padding)]


class Denoise(Model):
    def __init__(self):
        super(Denoise, self).__init__()
        self.encoder = tf.Sequential([
            layers.Input(shape=(28, 28, 1)),
            layers.Conv2D(16, (3, 3), activation='relu', padding='same', strides=2),
            layers.Conv2D(8, (3, 3), activation='relu', padding='same', strides=2)])
        self.decoder = tf.Sequential(
            conv2d_transpose(8, kernel_size=3, strides=2, activation='relu', padding='same')
            + conv2d_transpose(16, kernel_size=3, strides=2, activation='relu', padding='same')
            + [layers.Conv2D(1, kernel_size=(3, 3), activation='sigmoid', padding='same')])

    def call(self, x):
        encoded = self.encoder(x)
        decoded = self.decoder(encoded)
        return decoded


class AnomalyDetector(Model):
    def __init__(self):
        super(AnomalyDetector, self).__init__()
        self.encoder = tf.Sequential([
            layers.Dense(32, activation="relu"),
            layers.Dense(16, activation="relu"),
            layers.Dense(8, activation="relu")])
        self.decoder = tf.Sequential([
            layers.Dense(16, activation="relu"),
            layers.Dense(32, activation="relu"),
            layers.Dense(140, activation="sigmoid")])

    def call(self, x):
        encoded = self.encoder(x)
        decoded = self.decoder(encoded)
        return decoded


# --- data -------------------------------------------------------------------------------------------

def load_fashion_mnist(limit, synthetic):
    """(x_train, x_test) uint8 (n, 28, 28): Fashion-MNIST, or autoenc's synthetic digits offline."""
    if not synthetic:
        try:
            (x_train, _), (x_test, _) = fashion_mnist.load_data()
            return x_train[:limit], x_test[:max(1, limit // 6)]
        except (OSError, ValueError) as error:
            print(f"Fashion-MNIST is not available ({' '.join(str(error).split())[:120]}); using synthetic digits")
    (x_train, _), (x_test, _) = digits.load_data(n_train=limit, n_test=max(1, limit // 6), cache=False)
    return x_train, x_test


def synthetic_ecg(n, seed=0):
    """n ECG-like beats of 140 samples and their labels (1 normal, 0 abnormal, as ECG5000's simplified
    version): P, QRS and T waves as Gaussian bumps with jitter; abnormal beats have a wide, low QRS, an
    inverted T wave and a drifting baseline. Returns (data float64 (n, 141), last column the label)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, 140)
    bump = lambda c, w, a: a[:, None] * np.exp(-((t - c[:, None]) / w[:, None]) ** 2)   # noqa: E731
    labels = (rng.random(n) < 0.6).astype(np.float64)
    j = lambda s: rng.normal(0, s, n)   # noqa: E731
    normal = labels == 1
    qrs_w = np.where(normal, 0.02, 0.05) + np.abs(j(0.003))
    qrs_a = np.where(normal, 3.0, 1.6) + j(0.2)
    t_a = np.where(normal, 0.6, -0.5) + j(0.08)
    width = lambda w: np.full(n, w)   # noqa: E731
    beats = (bump(0.2 + j(0.01), width(0.04), 0.3 + j(0.05))            # P
             + bump(0.4 + j(0.01), qrs_w, qrs_a)                        # R
             - bump(0.44 + j(0.01), width(0.02), 0.6 + j(0.05))         # S
             + bump(0.7 + j(0.02), width(0.07), t_a)                     # T
             + np.where(normal, 0.0, 1.0)[:, None] * j(0.3)[:, None] * t  # baseline drift
             + rng.normal(0, 0.05, (n, 140)))
    return np.concatenate([beats, labels[:, None]], axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=6000, help="training images (default 6000)")
    parser.add_argument("--ecg-epochs", type=int, default=20, help="AnomalyDetector epochs (the tutorial's 20)")
    parser.add_argument("--synthetic", action="store_true", help="synthetic digits instead of Fashion-MNIST")
    parser.add_argument("--out", default="examples_out/tf_tutorial")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tf.set_random_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    # First example: basic autoencoder
    x_train, x_test = load_fashion_mnist(args.limit, args.synthetic)
    x_train = x_train.astype('float32') / 255.
    x_test = x_test.astype('float32') / 255.
    print(x_train.shape)
    print(x_test.shape)
    shape = x_test.shape[1:]
    latent_dim = 64
    autoencoder = Autoencoder(latent_dim, shape)
    autoencoder.compile(optimizer='adam', loss=losses.MeanSquaredError())
    autoencoder.fit(x_train, x_train, epochs=args.epochs, shuffle=True, validation_data=(x_test, x_test))
    encoded_imgs = autoencoder.encoder(x_test).numpy()
    decoded_imgs = autoencoder.decoder(encoded_imgs).numpy()
    plotting.plot_reconstructions(x_test, decoded_imgs, os.path.join(args.out, "basic.png"),
                                  title="basic autoencoder (latent 64)")

    # Second example: image denoising
    x_train, x_test = x_train[..., np.newaxis], x_test[..., np.newaxis]
    noise_factor = 0.2
    rng = np.random.default_rng(args.seed)
    x_train_noisy = x_train + noise_factor * rng.normal(size=x_train.shape).astype('float32')
    x_test_noisy = x_test + noise_factor * rng.normal(size=x_test.shape).astype('float32')
    x_train_noisy = np.clip(x_train_noisy, 0., 1.)
    x_test_noisy = np.clip(x_test_noisy, 0., 1.)
    if not hasattr(layers, "Conv2DTranspose"):
        print("Denoise: this autoenc has no layers.Conv2DTranspose yet; its decoder uses UpSampling2D + Conv2D "
              "of the same shapes instead")
    autoencoder = Denoise()
    autoencoder.compile(optimizer='adam', loss=losses.MeanSquaredError())
    autoencoder.fit(x_train_noisy, x_train, epochs=args.epochs, shuffle=True,
                    validation_data=(x_test_noisy, x_test))
    autoencoder.encoder.summary()
    autoencoder.decoder.summary()
    encoded_imgs = autoencoder.encoder(x_test_noisy).numpy()
    decoded_imgs = autoencoder.decoder(encoded_imgs).numpy()
    plotting.plot_image_rows({"noisy": x_test_noisy, "denoised": decoded_imgs, "original": x_test},
                             os.path.join(args.out, "denoise.png"), title="Denoise")

    # Third example: anomaly detection (synthetic ECG-like beats instead of ECG5000)
    raw_data = synthetic_ecg(max(100, args.limit // 3), seed=args.seed)
    labels = raw_data[:, -1]
    data = raw_data[:, 0:-1]
    order = np.random.default_rng(21).permutation(len(data))   # train_test_split(test_size=0.2, random_state=21)
    split = int(0.8 * len(data))
    train_data, test_data = data[order[:split]], data[order[split:]]
    train_labels, test_labels = labels[order[:split]], labels[order[split:]]
    min_val = np.min(train_data)
    max_val = np.max(train_data)
    train_data = (train_data - min_val) / (max_val - min_val)
    test_data = (test_data - min_val) / (max_val - min_val)
    train_data = train_data.astype(np.float32)
    test_data = test_data.astype(np.float32)
    train_labels = train_labels.astype(bool)
    test_labels = test_labels.astype(bool)
    normal_train_data = train_data[train_labels]
    normal_test_data = test_data[test_labels]
    anomalous_test_data = test_data[~test_labels]

    autoencoder = AnomalyDetector()
    autoencoder.compile(optimizer='adam', loss='mae')
    history = autoencoder.fit(normal_train_data, normal_train_data, epochs=args.ecg_epochs, batch_size=512,
                              validation_data=(test_data, test_data), shuffle=True)
    encoded_data = autoencoder.encoder(normal_test_data).numpy()
    decoded_data = autoencoder.decoder(encoded_data).numpy()
    assert decoded_data.shape == normal_test_data.shape
    reconstructions = autoencoder.predict(normal_train_data)
    train_loss = losses.mae(reconstructions, normal_train_data)
    threshold = np.mean(train_loss) + np.std(train_loss)
    print("Threshold: ", threshold)
    reconstructions = autoencoder.predict(anomalous_test_data)
    test_loss = losses.mae(reconstructions, anomalous_test_data)
    print("Anomalous test beats above the threshold:", float(np.mean(test_loss > threshold)))

    def predict(model, data, threshold):
        reconstructions = model(data)
        loss = losses.mae(reconstructions, data)
        return np.less(loss, threshold)

    def print_stats(predictions, labels):
        true_positive = np.sum(predictions & labels)
        print("Accuracy = {}".format(np.mean(predictions == labels)))
        print("Precision = {}".format(true_positive / max(1, np.sum(predictions))))
        print("Recall = {}".format(true_positive / max(1, np.sum(labels))))

    preds = predict(autoencoder, test_data, threshold)
    print_stats(preds, test_labels)
    plotting.plot_history(history, os.path.join(args.out, "ecg_loss.png"), title="AnomalyDetector (synthetic ECG)")
    print(f"Wrote basic.png, denoise.png and ecg_loss.png to {args.out}")


if __name__ == "__main__":
    main()
