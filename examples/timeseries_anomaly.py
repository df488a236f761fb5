"""keras-io's "Timeseries anomaly detection using an Autoencoder" (pavithrasv, 2020; keras-io
examples/timeseries/timeseries_anomaly_detection.py), run on autoenc: Conv1D, Dropout and
Conv1DTranspose layers reconstruct windows of a daily-periodic series, and windows it reconstructs
badly are anomalies.

The script is keras-io's, with the imports changed from keras to autoenc and these changes to run
anywhere: the two NAB series it downloads with pandas (art_daily_small_noise, art_daily_jumpsup) are
replaced by synthetic series of the same shape (a daily pattern, 288 values a day for 14 days, plus
small noise; the test series has a jump up on day 11), kept as NumPy arrays; the training data can be
shrunk (--limit windows) and the epochs set (--epochs, keras-io: 50); the plots are saved into --out
instead of opened (plt.show()).

    python examples/timeseries_anomaly.py              # about a minute
    python examples/timeseries_anomaly.py --limit 0 --epochs 50

Writes loss.png, reconstruction.png and anomalies.png into --out.
"""
import argparse
import os

import matplotlib

matplotlib.use("Agg")   # the plots are written as PNG files

import numpy as np  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

import autoenc as keras  # noqa: E402  (keras-io: from tensorflow import keras)
from autoenc import layers  # noqa: E402  (keras-io: from tensorflow.keras import layers)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--limit", type=int, default=800, help="training windows, 0 for all 3745 (default 800)")
parser.add_argument("--epochs", type=int, default=10, help="at most this many epochs (keras-io: 50)")
parser.add_argument("--out", default="examples_out/timeseries_anomaly")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)
keras.utils.set_random_seed(args.seed)


def show(name):
    plt.savefig(os.path.join(args.out, name))   # keras-io: plt.show()
    plt.close()


"""
## Load the data

In place of the Numenta Anomaly Benchmark's art_daily_small_noise.csv and art_daily_jumpsup.csv: a
value every 5 minutes for 14 days, a daily pattern (low at night, a plateau in the day) with small
noise; the test series jumps up for part of day 11.
"""

rng = np.random.default_rng(args.seed)
t = np.arange(288 * 14)
day = (t % 288) / 288
pattern = 20 + 60 * np.sin(np.pi * np.clip(day - 0.3, 0, 0.4) / 0.4) ** 0.3   # 0 outside 7:12 to 16:48
df_small_noise = (pattern + rng.normal(0, 1.5, t.size)).reshape(-1, 1)
df_daily_jumpsup = (pattern + rng.normal(0, 1.5, t.size)).reshape(-1, 1)
df_daily_jumpsup[288 * 10 + 150:288 * 10 + 180] += 80

"""
## Prepare training data
"""

# Normalize and save the mean and std we get,
# for normalizing test data.
training_mean = df_small_noise.mean()
training_std = df_small_noise.std()
df_training_value = (df_small_noise - training_mean) / training_std
print("Number of training samples:", len(df_training_value))

TIME_STEPS = 288


# Generated training sequences for use in the model.
def create_sequences(values, time_steps=TIME_STEPS):
    output = []
    for i in range(len(values) - time_steps + 1):
        output.append(values[i : (i + time_steps)])
    return np.stack(output)


x_train = create_sequences(df_training_value).astype("float32")
if args.limit:
    x_train = x_train[rng.permutation(len(x_train))[:args.limit]]
print("Training input shape: ", x_train.shape)

"""
## Build a model
"""

model = keras.Sequential(
    [
        layers.Input(shape=(x_train.shape[1], x_train.shape[2])),
        layers.Conv1D(
            filters=32, kernel_size=7, padding="same", strides=2, activation="relu"
        ),
        layers.Dropout(rate=0.2),
        layers.Conv1D(
            filters=16, kernel_size=7, padding="same", strides=2, activation="relu"
        ),
        layers.Conv1DTranspose(
            filters=16, kernel_size=7, padding="same", strides=2, activation="relu"
        ),
        layers.Dropout(rate=0.2),
        layers.Conv1DTranspose(
            filters=32, kernel_size=7, padding="same", strides=2, activation="relu"
        ),
        layers.Conv1DTranspose(filters=1, kernel_size=7, padding="same"),
    ]
)
model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.001), loss="mse")
model.summary()

"""
## Train the model
"""

history = model.fit(
    x_train,
    x_train,
    epochs=args.epochs,
    batch_size=128,
    validation_split=0.1,
    callbacks=[
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=5, mode="min")
    ],
)

plt.plot(history.history["loss"], label="Training Loss")
plt.plot(history.history["val_loss"], label="Validation Loss")
plt.legend()
show("loss.png")

"""
## Detecting anomalies
"""

# Get train MAE loss.
x_train_pred = model.predict(x_train)
train_mae_loss = np.mean(np.abs(x_train_pred - x_train), axis=1)

# Get reconstruction loss threshold.
threshold = np.max(train_mae_loss)
print("Reconstruction error threshold: ", threshold)

# Checking how the first sequence is learnt
plt.plot(x_train[0])
plt.plot(x_train_pred[0])
show("reconstruction.png")

df_test_value = (df_daily_jumpsup - training_mean) / training_std

# Create sequences from test values.
x_test = create_sequences(df_test_value).astype("float32")
print("Test input shape: ", x_test.shape)

# Get test MAE loss.
x_test_pred = model.predict(x_test)
test_mae_loss = np.mean(np.abs(x_test_pred - x_test), axis=1)
test_mae_loss = test_mae_loss.reshape((-1))

# Detect all the samples which are anomalies.
anomalies = test_mae_loss > threshold
print("Number of anomaly samples: ", np.sum(anomalies))
print("Indices of anomaly samples: ", np.where(anomalies))

# data i is an anomaly if samples [(i - timesteps + 1) to (i)] are anomalies
anomalous_data_indices = []
for data_idx in range(TIME_STEPS - 1, len(df_test_value) - TIME_STEPS + 1):
    if np.all(anomalies[data_idx - TIME_STEPS + 1 : data_idx]):
        anomalous_data_indices.append(data_idx)

plt.plot(df_daily_jumpsup)
plt.plot(anomalous_data_indices, df_daily_jumpsup[anomalous_data_indices], "r.")
show("anomalies.png")
print(f"Anomalous data points: {len(anomalous_data_indices)}")
print(f"Wrote loss.png, reconstruction.png and anomalies.png to {args.out}")
