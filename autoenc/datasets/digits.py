"""Synthetic handwritten-looking digits, made offline: a stand-in for MNIST when it cannot be downloaded.

``load_data()`` returns arrays with MNIST's shapes, dtypes and look: 28x28 uint8 images of white
digits on black, each digit fitted in a 20x20 box and centred by its centre of mass.

How a digit is made
1. Glyph. The digits of several fonts shipped with matplotlib are taken as vector outlines
   (``TextPath``) and, once per (font, character), turned into a signed distance field on a 64x64 grid:
   ``sdf[y, x]`` = distance from the grid point to the outline, negative inside the ink. Which points
   are inside is found by filling the outline with matplotlib's Agg rasteriser.
2. Pose. A random linear map: rotation, slant (shear) and width (horizontal scale), scaled so the
   digit is about 26 pixels tall on a 40x40 sketch canvas.
3. Elastic distortion. A smooth random displacement field (white noise smoothed by a Gaussian, after
   Simard, Steinkraus and Platt, 2003) bends the strokes the way a hand does.
4. Pen. Reading the distance field at the displaced position of a pixel gives its distance to the
   stroke's edge. Subtracting a random offset thickens the strokes (dilation by a disc) or thins them
   (erosion) to a random pen width; where the distance is below zero there is ink.
5. Normalisation, MNIST's own recipe: the ink's bounding box is scaled to fit a 20x20 box, the centre
   of mass is moved to the middle of the 28x28 image (up to half a pixel, as MNIST's whole-pixel shift
   leaves it), and a ramp one pixel wide turns distance into antialiased ink:
   ``ink = clip(0.5 - distance, 0, 1)``.

Steps 2-5 are vectorised over a batch of digits: every pixel of every image is mapped back to where
it comes from and read there by bilinear interpolation, without a Python loop over digits.
"""

import warnings
from pathlib import Path

import numpy as np

from autoenc.datasets._cache import cache_dir
from autoenc.datasets._formats import check_split
from autoenc.files import atomic_write, read_npz

# Bump when the pictures change, so stale cached arrays are not reused.
GENERATOR_VERSION = 1
# Fonts shipped inside matplotlib (so every machine draws the same glyphs). Left out: monospaced and
# old-style fonts (dotted zero, descending digits) and upright serif or high-contrast fonts (feet and
# hairlines), which look nothing like handwriting.
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif-Italic.ttf",
    "STIXGeneralItalic.ttf",
    "cmss10.ttf",
)
# The characters drawn for each digit. Many people write a one as a single stroke, which is what a
# lowercase L looks like in most fonts.
CHARACTERS = ("0", "1l", "2", "3", "4", "5", "6", "7", "8", "9")
GRID = 64  # side of the distance-field grid of a glyph, in grid pixels
GLYPH_BOX = 48  # the glyph's larger side, in grid pixels; the rest is margin
OUTLINE_POINTS = 256  # outline points kept per glyph to measure the posed digit's bounding box
SIZE = 28  # side of an output image, in pixels
BOX = 20  # the digit is scaled to fit a BOX x BOX square, like MNIST
SKETCH = 40  # side of the canvas a digit is first drawn on, before MNIST's normalisation
SKETCH_BOX = 26  # the posed glyph's larger side on that canvas; the margin leaves room for bending
STROKE = (1.8, 3.4)  # range of the pen's width, in output pixels
PRESSURE = 0.25  # how much the pen's width varies along a stroke, in canvas pixels
ELASTIC_SIGMA = 5.0  # smoothness of the elastic distortion, in canvas pixels
ELASTIC_AMPLITUDE = (0.5, 1.5)  # range of its standard deviation, in canvas pixels
BATCH = 2048  # digits drawn at once: large enough to vectorise well, small enough for the cache


def _font_paths():
    """Return the paths of the ``FONT_FILES`` found in matplotlib's own font directory."""
    import matplotlib

    font_dir = Path(matplotlib.get_data_path(), "fonts", "ttf")
    paths = [font_dir / name for name in FONT_FILES if (font_dir / name).is_file()]
    if not paths:
        raise FileNotFoundError(f"None of the fonts {FONT_FILES} were found in {font_dir}.")
    return paths


def _outline(path, spacing=0.5):
    """Sample points along a matplotlib Path, at most ``spacing`` apart.

    Returns an ndarray of shape (n_points, 2) of (x, y) points and the total outline length.
    """
    points, length = [], 0.0
    for segment, _code in path.iter_bezier():  # lines, quadratic and cubic Bezier curves
        control = segment.control_points
        if len(control) == 1:  # a MOVETO: a point, not a piece of the outline
            continue
        # the control polygon is at least as long as the curve, so this many steps is enough
        polygon_length = np.sum(np.hypot(*np.diff(control, axis=0).T))
        steps = max(1, int(np.ceil(polygon_length / spacing)))
        curve = segment(np.arange(steps + 1) / steps)
        points.append(curve[:-1])
        length += np.sum(np.hypot(*np.diff(curve, axis=0).T))
    return np.concatenate(points), length


def _rasterise(paths, size):
    """Fill each path (in grid coordinates: pixel (row r, column c) is centred at x=c, y=r) with Agg.

    Returns a bool ndarray of shape (len(paths), size, size), True where a pixel centre is inside.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import PathPatch

    figure = Figure(figsize=(1, 1), dpi=size)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(-0.5, size - 0.5)
    axes.set_ylim(size - 0.5, -0.5)  # row 0 at the top, as in an image
    axes.axis("off")
    masks = []
    for path in paths:
        patch = axes.add_patch(PathPatch(path, facecolor="black", edgecolor="none"))
        canvas.draw()
        red = np.asarray(canvas.buffer_rgba())[:, :, 0]
        masks.append(red < 128)  # black ink on white paper
        patch.remove()
    return np.stack(masks)


def _signed_distance(inside, outline):
    """Distance from every grid pixel centre to the nearest outline point, negative inside the ink.

    inside : bool ndarray of shape (size, size)
    outline : ndarray of shape (n_points, 2) of (x, y) points densely sampled along the outline

    Returns a float32 ndarray of shape (size, size).
    """
    size = inside.shape[0]
    rows, cols = np.mgrid[0:size, 0:size]
    centres = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float32)
    outline = outline.astype(np.float32)
    # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: one matrix product gives all (pixel, point) pairs at once
    squared = (centres**2).sum(1)[:, None] + (outline**2).sum(1)[None, :] - 2 * centres @ outline.T
    distance = np.sqrt(np.maximum(squared.min(axis=1), 0)).reshape(size, size)
    return np.where(inside, -distance, distance)


def _font_glyphs(font_path):
    """Build the distance fields and measurements of the glyphs of one font, for every ``CHARACTERS``.

    Returns a list of dicts, one per (digit, character), with
        digit : int, the digit the glyph stands for
        sdf : float32 ndarray of shape (GRID, GRID), signed distance to the outline, in grid pixels
        width : float, the mean stroke width, 2 * area / perimeter, in grid pixels
        outline : ndarray of shape (OUTLINE_POINTS, 2), (x, y) points on the outline
    """
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    font = FontProperties(fname=font_path)
    digits, grid_paths = [], []
    for digit, characters in enumerate(CHARACTERS):
        for character in characters:
            digits.append(digit)
            grid_paths.append(_grid_path(TextPath((0, 0), character, size=1.0, prop=font)))

    glyphs = []
    for digit, grid_path, inside in zip(digits, grid_paths, _rasterise(grid_paths, GRID)):
        outline, perimeter = _outline(grid_path)
        keep = np.linspace(0, len(outline) - 1, OUTLINE_POINTS).round().astype(int)
        glyphs.append({
            "digit": digit,
            "sdf": _signed_distance(inside, outline),
            "width": 2 * inside.sum() / perimeter,  # a stroke of length l, width w: area w*l, perimeter ~2l
            "outline": outline[keep],
        })
    return glyphs


def _grid_path(path):
    """Move and scale a glyph's outline (font units, y up) into the centre of the GRID x GRID grid (y down).

    Returns a matplotlib Path whose larger side is GLYPH_BOX grid pixels.
    """
    from matplotlib.transforms import Affine2D

    (x0, y0), (x1, y1) = path.get_extents().get_points()
    scale = GLYPH_BOX / max(x1 - x0, y1 - y0)
    to_grid = (
        Affine2D()
        .translate(-(x0 + x1) / 2, -(y0 + y1) / 2)
        .scale(scale, -scale)
        .translate((GRID - 1) / 2, (GRID - 1) / 2)
    )
    return to_grid.transform_path(path)


_GLYPHS = None


def glyphs():
    """Return the glyph table, built on first use (about a second) and then kept in memory.

    Returns a dict of arrays, one entry per glyph:
        digit : int (n_glyphs,), the digit each glyph stands for
        sdf : float32 (n_glyphs, GRID, GRID), signed distance to the outline, in grid pixels
        width : (n_glyphs,), mean stroke width in grid pixels
        outline : (n_glyphs, OUTLINE_POINTS, 2), (x, y) points on the outline
    """
    global _GLYPHS
    if _GLYPHS is None:
        table = [glyph for font in _font_paths() for glyph in _font_glyphs(font)]
        _GLYPHS = {key: np.stack([glyph[key] for glyph in table]) for key in table[0]}
    return _GLYPHS


def _gaussian_weights(size, nodes, sigma):
    """Gaussian weights between the pixels of a row and the nodes of a coarse lattice.

    ``K[i, j] = exp(-(i - X_j)^2 / (2 sigma^2))`` for pixel i and lattice position X_j, each row then
    scaled to unit sum of squares. ``K @ noise @ K.T`` smooths noise on the lattice with a Gaussian
    along rows, then along columns: a separable convolution written as two matrix products. Each
    result is a weighted sum of independent N(0, 1) values whose squared weights sum to 1, so it is
    N(0, 1) itself, at the borders as much as in the middle.

    Returns a float32 ndarray of shape (size, nodes).
    """
    lattice = np.linspace(-sigma, size - 1 + sigma, nodes)  # reach past the borders, as noise does
    weights = np.exp(-0.5 * ((np.arange(size)[:, None] - lattice[None, :]) / sigma) ** 2)
    return (weights / np.sqrt((weights**2).sum(axis=1, keepdims=True))).astype(np.float32)


def _smooth_field(rng, batch, channels, size, sigma):
    """Smooth random fields: Gaussian-smoothed white noise with standard deviation 1 at every pixel.

    Returns a float32 ndarray of shape (batch, channels, size, size).
    """
    nodes = int(np.ceil(size / sigma)) + 3  # a few nodes per sigma is enough for a smooth field
    weights = _gaussian_weights(size, nodes, sigma)
    noise = rng.standard_normal((batch, channels, nodes, nodes), dtype=np.float32)
    return weights @ noise @ weights.T


def _bilinear(images, index, x, y):
    """Read ``images[index]`` at real-valued coordinates by bilinear interpolation.

    images : ndarray of shape (n_images, h, w)
    index : int ndarray of shape (batch,), which image each row of ``x``, ``y`` reads
    x, y : ndarrays of shape (batch, n_points), column and row coordinates; clamped to the image

    Returns a float32 ndarray of shape (batch, n_points).
    """
    n_images, h, w = images.shape
    x = np.clip(x, 0, w - 1.001)  # keep x0 + 1 inside the image
    y = np.clip(y, 0, h - 1.001)
    x0 = x.astype(np.intp)  # floor, since x >= 0
    y0 = y.astype(np.intp)
    fx = (x - x0).astype(np.float32)
    fy = (y - y0).astype(np.float32)
    flat = images.reshape(-1)
    corner = index[:, None] * (h * w) + y0 * w + x0  # flat index of the top-left neighbour
    top = flat[corner] * (1 - fx) + flat[corner + 1] * fx
    bottom = flat[corner + w] * (1 - fx) + flat[corner + w + 1] * fx
    return top * (1 - fy) + bottom * fy


def _pixel_grid(size):
    """Return the x and y coordinates of the pixel centres of a size x size image, each (size * size,)."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    return cols.ravel(), rows.ravel()


def _matrices(a, b, c, d):
    """Stack per-digit 2x2 matrices [[a, b], [c, d]], each entry of shape (batch,), into (batch, 2, 2)."""
    return np.stack([np.stack([a, b], axis=-1), np.stack([c, d], axis=-1)], axis=-2)


def _sketch(glyph, rng):
    """Steps 2-4: pose, bend and pen one batch of glyphs on a SKETCH x SKETCH canvas.

    glyph : int ndarray of shape (batch,), indices into the ``glyphs()`` table
    rng : np.random.Generator supplying all the randomness

    Returns a float32 ndarray of shape (batch, SKETCH, SKETCH): each pixel's signed distance to the
    edge of the pen stroke, in canvas pixels, negative on the ink.
    """
    table = glyphs()
    batch = len(glyph)
    # Pose: the linear map L = rotation @ slant @ width, from the glyph grid to the canvas.
    angle = np.deg2rad(np.clip(rng.normal(0.0, 8.0, batch), -25, 25))
    slant = np.clip(rng.normal(0.1, 0.2, batch), -0.4, 0.6)
    width = rng.uniform(0.75, 1.15, batch)
    cos, sin, one, zero = np.cos(angle), np.sin(angle), np.ones(batch), np.zeros(batch)
    rotation = _matrices(cos, -sin, sin, cos)
    shear = _matrices(one, -slant, zero, one)  # y points down, so x -= slant * y leans the top right
    stretch = _matrices(width, zero, zero, one)
    linear = rotation @ shear @ stretch  # (batch, 2, 2)

    # Scale the posed outline so its larger side is SKETCH_BOX canvas pixels, and centre its box.
    posed = table["outline"][glyph] @ linear.transpose(0, 2, 1)
    low, high = posed.min(axis=1), posed.max(axis=1)  # (batch, 2) corners of the posed box
    scale = SKETCH_BOX / (high - low).max(axis=1)
    middle = (low + high) / 2
    length_scale = scale * np.sqrt(width)  # det(L) = width: L stretches lengths by sqrt(width) on average

    # Elastic distortion: canvas pixel p shows what the undistorted digit has at p + displacement(p).
    field = _smooth_field(rng, batch, 3, SKETCH, sigma=ELASTIC_SIGMA).reshape(batch, 3, -1)
    amplitude = rng.uniform(*ELASTIC_AMPLITUDE, (batch, 1)).astype(np.float32)
    x, y = _pixel_grid(SKETCH)
    px = x + amplitude * field[:, 0] - (SKETCH - 1) / 2
    py = y + amplitude * field[:, 1] - (SKETCH - 1) / 2

    # Back to the glyph grid: q = L^-1 (p / scale + middle) = A p + b, in float32 for speed.
    inverse = np.linalg.inv(linear)
    a = (inverse / scale[:, None, None]).astype(np.float32)
    b = (inverse @ middle[:, :, None])[:, :, 0].astype(np.float32)
    gx = a[:, 0, 0, None] * px + a[:, 0, 1, None] * py + b[:, 0, None]
    gy = a[:, 1, 0, None] * px + a[:, 1, 1, None] * py + b[:, 1, None]

    # Pen: move the glyph's edge out by `offset` so its strokes become `stroke` pixels wide on average,
    # plus a little pressure that varies along the stroke.
    stroke = rng.uniform(*STROKE, batch) * (SKETCH_BOX / BOX)
    offset = (stroke - length_scale * table["width"][glyph]) / 2  # > 0 dilates the strokes, < 0 erodes
    pressure = PRESSURE * field[:, 2]
    distance = _bilinear(table["sdf"], glyph, gx, gy) * length_scale[:, None].astype(np.float32)
    distance -= offset[:, None].astype(np.float32) + pressure
    return distance.reshape(batch, SKETCH, SKETCH)


def _normalise(distance, rng):
    """Step 5, MNIST's own recipe: fit the ink's bounding box in a BOX x BOX square, keeping the aspect
    ratio, and move the ink's centre of mass to the centre of the SIZE x SIZE image.

    distance : float32 ndarray of shape (batch, SKETCH, SKETCH), from ``_sketch``

    Returns a uint8 ndarray of shape (batch, SIZE, SIZE), 0..255.
    """
    batch = len(distance)
    ink = np.clip(0.5 - distance, 0.0, 1.0)  # a ramp one pixel wide: the antialiased edge
    inked_rows = (distance < 0).any(axis=2)  # (batch, SKETCH): rows whose pixel centres are on the ink
    inked_cols = (distance < 0).any(axis=1)
    height = SKETCH - inked_rows[:, ::-1].argmax(axis=1) - inked_rows.argmax(axis=1)
    width = SKETCH - inked_cols[:, ::-1].argmax(axis=1) - inked_cols.argmax(axis=1)
    zoom = (BOX / np.maximum(np.maximum(height, width), 1)).astype(np.float32)  # canvas px -> output px

    mass = np.maximum(ink.sum(axis=(1, 2)), 1e-6)
    centre_x = (ink.sum(axis=1) * np.arange(SKETCH, dtype=np.float32)).sum(axis=1) / mass
    centre_y = (ink.sum(axis=2) * np.arange(SKETCH, dtype=np.float32)).sum(axis=1) / mass
    # MNIST shifted by whole pixels, which leaves the centre of mass up to half a pixel off.
    target = ((SIZE - 1) / 2 + rng.uniform(-0.5, 0.5, (batch, 2))).astype(np.float32)

    x, y = _pixel_grid(SIZE)
    sx = centre_x[:, None] + (x - target[:, 0, None]) / zoom[:, None]
    sy = centre_y[:, None] + (y - target[:, 1, None]) / zoom[:, None]
    resampled = _bilinear(distance, np.arange(batch), sx, sy) * zoom[:, None]  # distances shrink too
    ink = np.clip(0.5 - resampled, 0.0, 1.0)
    ink[(sx < 0) | (sx > SKETCH - 1) | (sy < 0) | (sy > SKETCH - 1)] = 0.0  # nothing is drawn off the canvas
    return np.rint(255 * ink).astype(np.uint8).reshape(batch, SIZE, SIZE)


def generate(n, seed=0):
    """Generate ``n`` synthetic digits; the same ``seed`` always gives the same digits.

    seed : int, or a ``np.random.SeedSequence``

    Returns ``(x, y)``:
        x : ndarray of shape (n, 28, 28), uint8, white digits on black, 0..255
        y : ndarray of shape (n,), uint8, the digits; each of 0..9 appears n // 10 or n // 10 + 1 times
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer; received n={n!r}.")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    images = np.empty((n, SIZE, SIZE), dtype=np.uint8)
    table = glyphs()
    choices = [np.flatnonzero(table["digit"] == digit) for digit in range(10)]
    for start in range(0, n, BATCH):
        digit = labels[start : start + BATCH]
        glyph = np.empty(len(digit), dtype=np.intp)
        for d in range(10):  # pick a font (and character) for each digit at random
            glyph[digit == d] = rng.choice(choices[d], size=np.count_nonzero(digit == d))
        images[start : start + BATCH] = _normalise(_sketch(glyph, rng), rng)
    return images, labels


def cache_file(n_train, n_test, seed):
    """Return the ``Path`` where ``load_data(n_train, n_test, seed)`` keeps its arrays."""
    return cache_dir() / f"digits-v{GENERATOR_VERSION}-train{n_train}-test{n_test}-seed{seed}.npz"


def load_data(n_train=60000, n_test=10000, seed=0, *, cache=True):
    """Load synthetic handwritten-looking digits shaped like MNIST, generating them on first use.

    n_train, n_test : number of training and test images
    seed : non-negative int; the same seed always gives the same digits. The training and test sets
        come from independent random streams, so the test set does not depend on ``n_train``.
    cache : keep the arrays in the dataset cache directory and reuse them (generating 70,000 digits
        takes ten seconds or so; loading them, a fraction of a second).

    Returns ``(x_train, y_train), (x_test, y_test)``:
        x_train : ndarray of shape (n_train, 28, 28), uint8, white digits on black, 0..255
        y_train : ndarray of shape (n_train,), uint8, the digits 0..9, equally many of each
        x_test : ndarray of shape (n_test, 28, 28), uint8
        y_test : ndarray of shape (n_test,), uint8
    """
    for name, value in (("n_train", n_train), ("n_test", n_test), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer; received {name}={value!r}.")
    path = cache_file(n_train, n_test, seed)
    if cache and path.is_file():
        try:
            arrays = read_npz(path, ("x_train", "y_train", "x_test", "y_test"))
            check_split(arrays["x_train"], arrays["y_train"], path, "train")
            check_split(arrays["x_test"], arrays["y_test"], path, "test")
            if len(arrays["x_train"]) == n_train and len(arrays["x_test"]) == n_test:
                return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
        except ValueError:
            pass  # a damaged cache file is simply made again

    train_seed, test_seed = np.random.SeedSequence(seed).spawn(2)
    x_train, y_train = generate(n_train, train_seed)
    x_test, y_test = generate(n_test, test_seed)
    if cache:
        def save(f):
            np.savez_compressed(f, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)

        try:
            atomic_write(path, save)
        except OSError as error:  # e.g. a read-only home directory: the cache is only a convenience
            warnings.warn(f"Could not cache the synthetic digits in {path}: {error}", stacklevel=2)
    return (x_train, y_train), (x_test, y_test)
