"""keras-io's "Convolutional Autoencoder For Image Denoising" (Santiago L. Valdarrama, 2021;
keras-io examples/vision/autoencoder.py), run on autoenc.

The script is keras-io's, with the imports changed from keras to autoenc and three changes to run
anywhere: the data can be shrunk (--limit; synthetic digits from autoenc.datasets.digits unless
--mnist), the epochs set (--epochs, keras-io trains 50 then 100), and display() saves its figure into
--out instead of opening a window (plt.show()).

    python examples/keras_io_denoising.py                        # synthetic digits, a few minutes
    python examples/keras_io_denoising.py --mnist --limit 0 --epochs 50

Writes reconstructions.png, noisy.png and denoised.png into --out.
"""
import argparse
import os

import matplotlib

matplotlib.use("Agg")   # display() writes PNG files

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from autoenc import layers  # noqa: E402  (keras-io: from keras import layers)
from autoenc.datasets import digits, mnist  # noqa: E402  (keras-io: from keras.datasets import mnist)
from autoenc.models import Model  # noqa: E402  (keras-io: from keras.models import Model)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--mnist", action="store_true", help="use real MNIST instead of synthetic digits")
parser.add_argument("--limit", type=int, default=6000, help="training images, 0 for all (default 6000)")
parser.add_argument("--epochs", type=int, default=3, help="epochs of each fit (keras-io: 50, then 100)")
parser.add_argument("--out", default="examples_out/keras_io_denoising")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)


def preprocess(array):
    """
    Normalizes the supplied array and reshapes it into the appropriate format.
    """

    array = array.astype("float32") / 255.0
    array = np.reshape(array, (len(array), 28, 28, 1))
    return array


def noise(array):
    """
    Adds random noise to each image in the supplied array.
    """

    noise_factor = 0.4
    noisy_array = array + noise_factor * np.random.normal(
        loc=0.0, scale=1.0, size=array.shape
    )

    return np.clip(noisy_array, 0.0, 1.0)


def display(array1, array2, name):
    """
    Displays ten random images from each one of the supplied arrays.
    """

    n = 10

    indices = np.random.randint(len(array1), size=n)
    images1 = array1[indices, :]
    images2 = array2[indices, :]

    plt.figure(figsize=(20, 4))
    for i, (image1, image2) in enumerate(zip(images1, images2)):
        ax = plt.subplot(2, n, i + 1)
        plt.imshow(image1.reshape(28, 28))
        plt.gray()
        ax.get_xaxis().set_visible(False)
        ax.get_yaxis().set_visible(False)

        ax = plt.subplot(2, n, i + 1 + n)
        plt.imshow(image2.reshape(28, 28))
        plt.gray()
        ax.get_xaxis().set_visible(False)
        ax.get_yaxis().set_visible(False)

    plt.savefig(os.path.join(args.out, name))   # keras-io: plt.show()
    plt.close()


"""
## Prepare the data
"""

# Since we only need images from the dataset to encode and decode, we
# won't use the labels.
if args.mnist:
    (train_data, _), (test_data, _) = mnist.load_data()
else:
    n = args.limit or 60000
    (train_data, _), (test_data, _) = digits.load_data(n_train=n, n_test=max(10, n // 6), cache=not args.limit)
if args.limit:
    train_data, test_data = train_data[:args.limit], test_data[:max(10, args.limit // 6)]

# Normalize and reshape the data
train_data = preprocess(train_data)
test_data = preprocess(test_data)

# Create a copy of the data with added noise
noisy_train_data = noise(train_data)
noisy_test_data = noise(test_data)

# Display the train data and a version of it with added noise
display(train_data, noisy_train_data, "noisy.png")

"""
## Build the autoencoder

We are going to use the Functional API to build our convolutional autoencoder.
"""

input = layers.Input(shape=(28, 28, 1))

# Encoder
x = layers.Conv2D(32, (3, 3), activation="relu", padding="same")(input)
x = layers.MaxPooling2D((2, 2), padding="same")(x)
x = layers.Conv2D(32, (3, 3), activation="relu", padding="same")(x)
x = layers.MaxPooling2D((2, 2), padding="same")(x)

# Decoder
x = layers.Conv2DTranspose(32, (3, 3), strides=2, activation="relu", padding="same")(x)
x = layers.Conv2DTranspose(32, (3, 3), strides=2, activation="relu", padding="same")(x)
x = layers.Conv2D(1, (3, 3), activation="sigmoid", padding="same")(x)

# Autoencoder
autoencoder = Model(input, x)
autoencoder.compile(optimizer="adam", loss="binary_crossentropy")
autoencoder.summary()

"""
Now we can train our autoencoder using `train_data` as both our input data
and target. Notice we are setting up the validation data using the same
format.
"""

autoencoder.fit(
    x=train_data,
    y=train_data,
    epochs=args.epochs,
    batch_size=128,
    shuffle=True,
    validation_data=(test_data, test_data),
)

"""
Let's predict on our test dataset and display the original image together with
the prediction from our autoencoder.
"""

predictions = autoencoder.predict(test_data)
display(test_data, predictions, "reconstructions.png")

"""
Now that we know that our autoencoder works, let's retrain it using the noisy
data as our input and the clean data as our target. We want our autoencoder to
learn how to denoise the images.
"""

autoencoder.fit(
    x=noisy_train_data,
    y=train_data,
    epochs=args.epochs,
    batch_size=128,
    shuffle=True,
    validation_data=(noisy_test_data, test_data),
)

"""
Let's now predict on the noisy data and display the results of our autoencoder.
"""

predictions = autoencoder.predict(noisy_test_data)
display(noisy_test_data, predictions, "denoised.png")
print(f"Wrote noisy.png, reconstructions.png and denoised.png to {args.out}")
