"""The seed blog post ("Autoencoders Escape the curse of dimensionality") as a runnable script.

The post's code line for line, with `keras` swapped for `autoenc`. Two departures, both flags:
the data are autoenc's synthetic digits unless --mnist is given (the post downloads MNIST), and it
trains on the first --limit images for --epochs epochs, so that it finishes in a couple of minutes
(`--limit 0 --epochs 10 --mnist` is exactly the post).

    python examples/seed_autoencoder.py                 # synthetic digits, quick
    python examples/seed_autoencoder.py --mnist --limit 0 --epochs 10

The post's recipe (MSE, Adam, batch 256) can collapse to a blank output on MNIST (see the README);
the CollapseMonitor below says so when it happens. `autoenc train` uses binary crossentropy instead.
"""
import argparse
import os

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--mnist", action="store_true", help="use real MNIST (downloaded once) instead of synthetic digits")
parser.add_argument("--epochs", type=int, default=3, help="the post uses 10 (default 3)")
parser.add_argument("--limit", type=int, default=6000, help="training images to use, 0 for all (default 6000)")
parser.add_argument("--out", default="examples_out/seed", help="where to write the pictures")
parser.add_argument("--seed", type=int, default=1)
args = parser.parse_args()

# Importing Libraries
import numpy as np
import autoenc
from autoenc.models import Model, Sequential
from autoenc.layers import Input, Dense, Conv2D, MaxPooling2D, UpSampling2D, Flatten, Reshape, Dropout
from autoenc import regularizers
from autoenc.monitors import CollapseMonitor
from autoenc import plotting

autoenc.set_random_seed(args.seed)

# Loads the training and test data sets ignoring class labels
if args.mnist:
    from autoenc.datasets import mnist
    (x_train, _), (x_test, _) = mnist.load_data()
else:   # synthetic digits: MNIST's shapes, dtypes and look, drawn offline (only as many as needed)
    from autoenc.datasets import digits
    n = args.limit or 60000
    (x_train, _), (x_test, _) = digits.load_data(n_train=n, n_test=max(1, n // 6), cache=not args.limit)
if args.limit:
    x_train, x_test = x_train[:args.limit], x_test[:max(1, args.limit // 6)]

# Normalization of the input data to scale it between 0 and 1
max_value = float(x_train.max())
x_train = x_train.astype('float32') / max_value
x_test = x_test.astype('float32') / max_value
print(x_test.shape, x_train.shape)

# Changing the train and test data to 4-dimensional tensors (images, height, width, channels)
x_train = x_train[:, :, :, None]
x_test = x_test[:, :, :, None]
print(x_test.shape, x_train.shape)

input_img = Input(shape=(28, 28, 1))

# Encoder
x = Conv2D(16, (3, 3), activation='relu', padding='same')(input_img)
x = MaxPooling2D((2, 2), padding='same')(x)
x = Conv2D(8, (3, 3), activation='relu', padding='same')(x)
x = MaxPooling2D((2, 2), padding='same')(x)
encoded = Conv2D(8, (3, 3), activation='relu', padding='same')(x)

# Decoder
x = Conv2D(8, (3, 3), activation='relu', padding='same')(encoded)
x = UpSampling2D((2, 2))(x)
x = Conv2D(8, (3, 3), activation='relu', padding='same')(x)
x = UpSampling2D((2, 2))(x)
x = Conv2D(16, (3, 3), activation='relu', padding='same')(x)
decoded = Conv2D(1, (3, 3), activation='sigmoid', padding='same')(x)

autoencoder = Model(input_img, decoded)
autoencoder.summary()

# Compiling and fitting the model
autoencoder.compile(optimizer='adam', loss='mean_squared_error')
history = autoencoder.fit(x_train, x_train,
                          epochs=args.epochs,
                          batch_size=256,
                          shuffle=True,
                          validation_data=(x_test, x_test),
                          callbacks=[CollapseMonitor(probe=x_test[:64])])

# What the post imports IPython's SVG and matplotlib for: a drawing of the model, and the pictures (files, not inline)
os.makedirs(args.out, exist_ok=True)
plotting.plot_model(autoencoder, os.path.join(args.out, "model.svg"))
plotting.plot_reconstructions(x_test, autoencoder.predict(x_test[:10]), os.path.join(args.out, "reconstructions.png"))
plotting.plot_history(history, os.path.join(args.out, "loss.png"))
print(f"Wrote model.svg, reconstructions.png and loss.png to {args.out}")
