"""The seed blog post's convolutional autoencoder, ready-made."""
from autoenc.layers import Conv2D, Input, MaxPooling2D, UpSampling2D
from autoenc.models.model import Model


def seed_autoencoder():
    """The post's model, layer for layer: 28x28x1 -> 7x7x8 (the bottleneck) -> 28x28x1, 4,385
    parameters, 3x3 'same' convolutions with ReLU and a sigmoid output. Not compiled."""
    input_img = Input(shape=(28, 28, 1))
    x = Conv2D(16, (3, 3), activation="relu", padding="same")(input_img)
    x = MaxPooling2D((2, 2), padding="same")(x)
    x = Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    x = MaxPooling2D((2, 2), padding="same")(x)
    encoded = Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    x = Conv2D(8, (3, 3), activation="relu", padding="same")(encoded)
    x = UpSampling2D((2, 2))(x)
    x = Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    x = UpSampling2D((2, 2))(x)
    x = Conv2D(16, (3, 3), activation="relu", padding="same")(x)
    decoded = Conv2D(1, (3, 3), activation="sigmoid", padding="same")(x)
    return Model(input_img, decoded)
