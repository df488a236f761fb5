"""Synthetic handwritten-looking digits, made offline: a stand-in for MNIST when it cannot be downloaded.

``load_data()`` returns arrays with MNIST's shapes, dtypes and look: 28x28 uint8 images of white
digits on black, each digit fitted in a 20x20 box and centred by its centre of mass.

How one digit is made
1. Glyph. Each digit 0-9 of several fonts shipped with matplotlib is taken as a vector outline
   (``TextPath``) and, once per (font, digit), turned into a signed distance field on a 64x64 grid:
   ``sdf[y, x]`` = distance from the grid point to the outline, negative inside the ink. The inside is
   found by rendering the glyph with matplotlib's Agg rasteriser.
2. Pose. A random affine map: rotation, slant (shear), width (horizontal scale) and a sub-pixel shift,
   with the scale chosen so the digit fills a 20x20 box, as in MNIST.
3. Elastic distortion. A smooth random displacement field (white noise smoothed by a Gaussian, after
   Simard, Steinkraus and Platt, 2003) bends the strokes the way a hand does.
4. Pen. Reading the distance field at the displaced position of each pixel gives its distance to the
   stroke edge, in output pixels. Subtracting a random offset thickens the stroke (dilation by a disc)
   or thins it (erosion), and a ramp one pixel wide turns distance into antialiased ink:
   ``ink = clip(0.5 - (distance - offset), 0, 1)``.

Everything after step 1 is vectorised over a batch of digits: each pixel of each digit is mapped
back to the glyph grid and read there (bilinear interpolation), so there is no loop over digits.
"""

import os
from pathlib import Path

import numpy as np

from ._cache import cache_dir, write_atomically
from ._formats import check_split, read_npz

# Bump when the pictures change, so stale cached arrays are not reused.
GENERATOR_VERSION = 1
# Fonts shipped inside matplotlib (so every machine draws the same glyphs). Monospaced and old-style
# fonts are left out: their slashed zero and descending digits look nothing like handwriting.
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Italic.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmss10.ttf",
)
GRID = 64  # side of the distance-field grid of a glyph, in grid pixels
GLYPH_BOX = 48  # the glyph's larger side, in grid pixels; the rest is margin
OUTLINE_POINTS = 256  # outline points kept per glyph to measure the posed digit's bounding box
SIZE = 28  # side of an output image, in pixels
BOX = 20  # the digit is scaled to fit a BOX x BOX square, like MNIST
BATCH = 2048  # digits drawn at once: large enough to vectorise well, small enough for the cache


def _font_paths():
    """Return the paths of the ``FONT_FILES`` found in matplotlib's own font directory."""
    import matplotlib

    font_dir = Path(matplotlib.get_data_path(), "fonts", "ttf")
    paths = [font_dir / name for name in FONT_FILES if (font_dir / name).is_file()]
    if not paths:
        raise FileNotFoundError(f"None of the fonts {FONT_FILES} were found in {font_dir}.")
    return paths


def _outline(path, spacing=0.25):
    """Sample points along a matplotlib Path, at most ``spacing`` apart.

    Returns an ndarray of shape (n_points, 2) of (x, y) points and the total outline length.
    """
    points, length = [], 0.0
    for segment, _code in path.iter_bezier():
        control = segment.control_points
        # the control polygon is at least as long as the curve, so this many steps is enough
        polygon_length = np.sum(np.hypot(*np.diff(control, axis=0).T))
        steps = max(1, int(np.ceil(polygon_length / spacing)))
        if len(control) == 1:  # a lone MOVETO
            continue
        curve = segment(np.arange(steps + 1) / steps)
        points.append(curve[:-1])
        length += np.sum(np.hypot(*np.diff(curve, axis=0).T))
    return np.concatenate(points), length


def _rasterise(path, size):
    """Fill ``path`` (in grid coordinates: pixel (row r, column c) is centred at x=c, y=r) with Agg.

    Returns a bool ndarray of shape (size, size), True where the pixel centre is inside the glyph.
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
    axes.add_patch(PathPatch(path, facecolor="black", edgecolor="none"))
    canvas.draw()
    red = np.asarray(canvas.buffer_rgba())[:, :, 0]
    return red < 128  # black ink on white paper


def _signed_distance(inside, outline):
    """Distance from every grid pixel centre to the nearest outline point, negative inside the ink.

    inside : bool ndarray of shape (size, size)
    outline : ndarray of shape (n_points, 2) of (x, y) points densely sampled along the outline

    Returns a float32 ndarray of shape (size, size).
    """
    size = inside.shape[0]
    rows, cols = np.mgrid[0:size, 0:size]
    centres = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float64)
    distance = np.empty(len(centres))
    for start in range(0, len(centres), 512):  # 512 pixels at a time keeps the (512, n_points) table small
        block = centres[start : start + 512]
        squared = ((block[:, None, :] - outline[None, :, :]) ** 2).sum(axis=2)
        distance[start : start + 512] = np.sqrt(squared.min(axis=1))
    distance = distance.reshape(size, size)
    return np.where(inside, -distance, distance).astype(np.float32)


def _glyph(font_path, digit):
    """Build the distance field and measurements of one digit of one font.

    Returns a dict with
        sdf : float32 ndarray of shape (GRID, GRID), signed distance to the outline, in grid pixels
        centre : ndarray of shape (2,), the (x, y) centre of mass of the ink
        width : float, the mean stroke width, 2 * area / perimeter, in grid pixels
        outline : ndarray of shape (OUTLINE_POINTS, 2), (x, y) points on the outline
    """
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath
    from matplotlib.transforms import Affine2D

    path = TextPath((0, 0), str(digit), size=1.0, prop=FontProperties(fname=font_path))
    (x0, y0), (x1, y1) = path.get_extents().get_points()
    scale = GLYPH_BOX / max(x1 - x0, y1 - y0)
    # font units have y up; the grid has y (rows) down, with the glyph's box centred in the grid
    to_grid = (
        Affine2D()
        .translate(-(x0 + x1) / 2, -(y0 + y1) / 2)
        .scale(scale, -scale)
        .translate((GRID - 1) / 2, (GRID - 1) / 2)
    )
    grid_path = to_grid.transform_path(path)
    outline, perimeter = _outline(grid_path)
    inside = _rasterise(grid_path, GRID)
    rows, cols = np.nonzero(inside)
    keep = np.linspace(0, len(outline) - 1, OUTLINE_POINTS).round().astype(int)
    return {
        "sdf": _signed_distance(inside, outline),
        "centre": np.array([cols.mean(), rows.mean()]),
        "width": 2 * inside.sum() / perimeter,  # a stroke of length l and width w: area w*l, perimeter ~2l
        "outline": outline[keep],
    }


_GLYPHS = None


def glyphs():
    """Return the glyph table, built on first use (about a second) and then kept in memory.

    Returns a dict of arrays indexed by glyph number ``font * 10 + digit``:
        sdf : float32 (n_glyphs, GRID, GRID); centre : (n_glyphs, 2); width : (n_glyphs,);
        outline : (n_glyphs, OUTLINE_POINTS, 2)
    """
    global _GLYPHS
    if _GLYPHS is None:
        table = [_glyph(font, digit) for font in _font_paths() for digit in range(10)]
        _GLYPHS = {key: np.stack([glyph[key] for glyph in table]) for key in table[0]}
    return _GLYPHS


def _gaussian_matrix(size, sigma):
    """The matrix of a Gaussian blur along one axis: ``blurred = K @ signal``.

    Row i holds the Gaussian weights exp(-(i - j)^2 / (2 sigma^2)) over j, normalised to sum to 1, so
    ``K @ image @ K.T`` is a separable 2-D Gaussian convolution (rows, then columns) with the kernel
    renormalised at the borders.

    Returns a float32 ndarray of shape (size, size).
    """
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _smooth_noise(rng, shape, sigma):
    """Gaussian-smoothed white noise with standard deviation about 1.

    Returns a float32 ndarray of ``shape``, whose last two axes are (SIZE, SIZE).
    """
    blur = _gaussian_matrix(SIZE, sigma)
    noise = rng.standard_normal(shape, dtype=np.float32)
    # Blurring white noise of variance 1 leaves variance sum_ij (k_i k_j)^2 = (sum_i k_i^2)^2 in the middle.
    std = np.sum(blur[SIZE // 2] ** 2)
    return blur @ noise @ blur.T / std


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


def _draw(labels, rng):
    """Draw one batch of digits.

    labels : int ndarray of shape (batch,), the digit to draw in each image
    rng : np.random.Generator supplying all the randomness

    Returns a uint8 ndarray of shape (batch, SIZE, SIZE).
    """
    table = glyphs()
    n_fonts = len(table["sdf"]) // 10
    batch = len(labels)
    glyph = rng.integers(n_fonts, size=batch) * 10 + labels

    # Pose: the linear map L = rotation @ slant @ width, from glyph grid to output pixels (before scaling).
    angle = np.deg2rad(np.clip(rng.normal(0.0, 8.0, batch), -25, 25))
    slant = np.clip(rng.normal(0.1, 0.2, batch), -0.4, 0.6)
    width = rng.uniform(0.75, 1.15, batch)
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shear = np.zeros((batch, 2, 2))
    shear[:, 0, 0] = shear[:, 1, 1] = 1.0
    shear[:, 0, 1] = -slant  # y points down, so x -= slant * y leans the top to the right
    linear = rotation @ shear @ np.stack([np.diag([w, 1.0]) for w in width])

    # Scale s so the posed digit fits the BOX: its outline spans s * extent, and the pen adds
    # (stroke - s * scale_of_L * glyph_width) on top, so s * extent + stroke - s * k * width_g = BOX.
    outline = table["outline"][glyph] - table["centre"][glyph][:, None, :]
    posed = outline @ linear.transpose(0, 2, 1)
    extent = (posed.max(axis=1) - posed.min(axis=1)).max(axis=1)
    stroke = rng.uniform(1.8, 3.4, batch)  # stroke width in output pixels
    length_scale = np.sqrt(width)  # det(L) = width: L stretches lengths by sqrt(width) on average
    glyph_width = table["width"][glyph] * length_scale
    scale = (BOX - stroke) / (extent - glyph_width)

    # Elastic distortion: output pixel p shows what the undistorted digit has at p + displacement(p).
    amplitude = rng.uniform(0.4, 1.4, batch)
    field = _smooth_noise(rng, (batch, 3, SIZE, SIZE), sigma=4.0)
    dx = amplitude[:, None, None] * field[:, 0]
    dy = amplitude[:, None, None] * field[:, 1]
    pressure = 0.25 * field[:, 2]  # the pen presses harder here and there: +-0.25 px of stroke

    # Map each output pixel back to the glyph grid: q = centre_g + L^-1 (p + d - centre_out) / s.
    shift = rng.uniform(-0.5, 0.5, (batch, 2))
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    px = (cols + dx - (SIZE - 1) / 2 - shift[:, 0, None, None]).reshape(batch, -1)
    py = (rows + dy - (SIZE - 1) / 2 - shift[:, 1, None, None]).reshape(batch, -1)
    inverse = np.linalg.inv(linear) / scale[:, None, None]
    gx = inverse[:, 0, 0, None] * px + inverse[:, 0, 1, None] * py + table["centre"][glyph, 0, None]
    gy = inverse[:, 1, 0, None] * px + inverse[:, 1, 1, None] * py + table["centre"][glyph, 1, None]

    # Pen: distance to the glyph's edge in output pixels, moved out by the dilation offset.
    distance = _bilinear(table["sdf"], glyph, gx, gy) * (scale * length_scale)[:, None]
    offset = (stroke - scale * glyph_width) / 2  # > 0 thickens the glyph's strokes, < 0 thins them
    distance = distance - offset[:, None] - pressure.reshape(batch, -1)
    ink = np.clip(0.5 - distance, 0.0, 1.0)
    return np.rint(255 * ink).astype(np.uint8).reshape(batch, SIZE, SIZE)


def generate(n, seed=0):
    """Generate ``n`` synthetic digits, the same ones for the same seed.

    Returns ``(x, y)``:
        x : ndarray of shape (n, 28, 28), uint8, white digits on black, 0..255
        y : ndarray of shape (n,), uint8, the digits, each of 0..9 equally often (up to n % 10)
    """
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer; received n={n!r}.")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    images = np.empty((n, SIZE, SIZE), dtype=np.uint8)
    for start in range(0, n, BATCH):
        images[start : start + BATCH] = _draw(labels[start : start + BATCH].astype(np.intp), rng)
    return images, labels
