"""Offline, seeded, vectorised numpy renderer of X-Domain- and CelebA-shaped data.

``xdomain``: a garment on a cluttered background, 9 attributes named after X-Domain's
with its class counts (16, 55, 22, 12, 20, 15, 12, 20, 6); every attribute drives one
visible part of the drawing:

=============  =====  ==============================================================
attribute      C      what it changes
=============  =====  ==============================================================
category       16     torso silhouette: shoulder width (4 levels) x hem flare (4)
colour         55     garment colour: 11 hues x 5 saturation/value tones
collar         22     neckline: 11 cuts (crew, round x3, V x3, square x2, turtle,
                      boat) x white trim or not
button         12     none, 1-5 buttons down the front x dark or light, or a zip
pattern        20     plain, stripes (3 directions, several periods), checks, dots,
                      gradients, grain, a chest band, two-tone
shape          15     waist pinch (5 levels) x hem curve (flat, down, up)
length         12     hem position (12 evenly spaced lengths)
sleeve_shape   20     cuff width (5 ratios) x sleeve angle (4), drawn over the torso
sleeve_length  6      sleeve length (cap sleeve to long)
=============  =====  ==============================================================

Neighbouring classes of an attribute differ by one step of one parameter, so some pairs
are near-identical at 32x32 (adjacent tones, stripe periods 0.4 vs 0.3, lengths 1.4
pixels apart): the fine-grained cases. Every image gets scale/position jitter,
illumination changes, a random two-colour background with clutter shapes and a random
line, sometimes an occluding patch, and pixel noise.

Training class sizes follow a power law per attribute, ``n_i ~ i^-g`` with ``g`` chosen
so that largest:smallest equals the paper's Table 5 ratio (2, 138, 210, 242, 476, 2138,
3401, 4115, 4162); which class gets which rank is a seeded permutation, so rare classes
sit next to frequent look-alikes. Validation and test splits keep the training shares
but give every class at least ``min_per_class`` images (10 and 20).

``xdomain_balanced``: the same renderer and attributes with every class of every
attribute equally frequent in every split: the ceiling against which the imbalanced
``xdomain`` measures what imbalance costs (a class CE cannot learn here is invisible, not
rare).

``cifar`` (100 balanced classes, one attribute) and ``deepfashion`` (1000 binary
attributes in DeepFashion's 5 groups, imbalance up to 1:733) give the CIFAR-100 and
DeepFashion configs an offline smoke mode at their real shapes. ``cifar_lt`` is
``cifar`` with CIFAR-100-LT's training profile (class ``i`` of rank ``i`` gets a share
``~ (1/100)^(i/99)``, largest:smallest 100, classes ranked by a seeded permutation) and
balanced validation and test splits: a second, single-label long-tailed test bed.

``celeba``: 40 binary attributes named as CelebA's with CelebA-like positive rates
(imbalance up to 1:43); a face on a cluttered background, each attribute a visible cue
(a small mark of its own colour and place, or a global change: blur, pale skin).

Everything is deterministic: the same version, config and seed give the same bytes,
whatever the chunking (every chunk draws from its own ``SeedSequence`` child).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import numpy as np

from crl_jax.data import schema as schema_lib

# Positive rates of CelebA's training split (approximately), so that the imbalance of
# each attribute (up to 1:43 for Bald) is CelebA's.
CELEBA_POSITIVE_RATES = (
    0.111, 0.267, 0.512, 0.205, 0.0224, 0.152, 0.241, 0.235, 0.239, 0.148, 0.051, 0.205,
    0.142, 0.058, 0.047, 0.065, 0.063, 0.042, 0.387, 0.455, 0.417, 0.483, 0.042, 0.115,
    0.835, 0.284, 0.043, 0.277, 0.080, 0.066, 0.057, 0.482, 0.208, 0.320, 0.189, 0.048,
    0.472, 0.123, 0.073, 0.774)

SPLITS = ("train", "validation", "test")
KINDS = ("xdomain", "xdomain_balanced", "celeba", "cifar", "cifar_lt", "deepfashion")
# Largest:smallest training class ratio of ``cifar_lt`` (CIFAR-100-LT's usual 100).
CIFAR_LT_IMBALANCE_RATIO = 100.0


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
  """What to generate: ``kind`` (one of ``KINDS``, module docstring), the side of the
  square images, the size of each split and the seed."""

  kind: str = "xdomain"
  image_size: int = 32
  num_train: int = 40_000
  num_validation: int = 4_000
  num_test: int = 10_000
  seed: int = 0

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"synthetic kind={self.kind!r} is unknown; use one of {KINDS}.")
    if self.image_size < 16:
      raise ValueError(f"image_size={self.image_size} is too small; use >= 16.")
    for name in ("num_train", "num_validation", "num_test"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}={getattr(self, name)} must be >= 1.")

  def split_size(self, split: str) -> int:
    return {"train": self.num_train, "validation": self.num_validation,
            "test": self.num_test}[split]


def schema_for(kind: str) -> schema_lib.Schema:
  """The schema of a synthetic kind."""
  if kind in ("cifar", "cifar_lt"):
    return schema_lib.Schema((schema_lib.Attribute(
        "label", tuple(f"class_{i:02d}" for i in range(100))),))
  if kind == "deepfashion":
    names = [f"{schema_lib.DEEPFASHION_GROUPS[i % 5]}_{i // 5:03d}"
             for i in range(schema_lib.DEEPFASHION_NUM_ATTRIBUTES)]
    groups = {g: tuple(range(k, schema_lib.DEEPFASHION_NUM_ATTRIBUTES, 5))
              for k, g in enumerate(schema_lib.DEEPFASHION_GROUPS)}
    return schema_lib.Schema(schema_lib.binary_attributes(names), groups=groups)
  if kind in ("xdomain", "xdomain_balanced"):
    return schema_lib.Schema(tuple(
        schema_lib.Attribute(name, tuple(f"{name}_{i:02d}" for i in range(count)))
        for name, count in zip(schema_lib.XDOMAIN_ATTRIBUTES,
                               schema_lib.XDOMAIN_CLASS_COUNTS)))
  if kind == "celeba":
    return schema_lib.Schema(schema_lib.binary_attributes(schema_lib.CELEBA_ATTRIBUTES))
  raise ValueError(f"synthetic kind={kind!r} is unknown; use one of {KINDS}.")


# ----------------------------------------------------------------------------------
# Labels.


def power_law_sizes(total: int, num_classes: int, ratio: float) -> np.ndarray:
  """Class sizes ``n_i ~ i^-g`` summing to ``total`` with ``n_1 / n_C ~= ratio``.

  Sizes are rounded by largest remainder (the sum is exact) and kept >= 1.

  Returns:
    int64[num_classes], descending.
  """
  exponent = math.log(ratio) / math.log(num_classes) if ratio > 1 else 0.0
  shares = np.arange(1, num_classes + 1, dtype=np.float64) ** -exponent
  return _round_to_total(shares / shares.sum() * total, total)


def _round_to_total(values: np.ndarray, total: int, minimum: int = 1) -> np.ndarray:
  sizes = np.maximum(np.floor(values).astype(np.int64), minimum)
  remainder = values - np.floor(values)
  while sizes.sum() < total:
    i = int(np.argmax(remainder))
    sizes[i] += 1
    remainder[i] = -1.0
  while sizes.sum() > total:  # only when the minimum forced sizes up: take from the top
    sizes[int(np.argmax(sizes))] -= 1
  return sizes


def split_class_sizes(spec: SyntheticSpec, split: str) -> list[np.ndarray]:
  """Exact class sizes of every attribute in a split (indexed by class id)."""
  rng = np.random.default_rng([spec.seed, 7919])  # the rank permutation: split-free
  total = spec.split_size(split)
  minimum = {"train": 1, "validation": 10, "test": 20}[split]
  sizes = []

  def balanced(count):  # every class alike, the remainder by largest share
    if total < count:
      raise ValueError(f"num_{split}={total} cannot hold one image of each of {count} "
                       "classes.")
    return _round_to_total(np.full(count, total / count), total)

  if spec.kind == "xdomain":
    for count, ratio in zip(schema_lib.XDOMAIN_CLASS_COUNTS,
                            schema_lib.XDOMAIN_IMBALANCE_RATIOS):
      by_rank = power_law_sizes(spec.num_train, count, ratio).astype(np.float64)
      permutation = rng.permutation(count)  # class permutation[r] has rank r
      shares = np.empty(count)
      shares[permutation] = by_rank / by_rank.sum()
      if split == "train":
        class_sizes = np.empty(count, np.int64)
        class_sizes[permutation] = by_rank.astype(np.int64)
      else:
        if minimum * count > total:
          raise ValueError(f"num_{split}={total} cannot hold {minimum} images of each "
                           f"of {count} classes; use >= {minimum * count}.")
        class_sizes = _round_to_total(shares * total, total, minimum)
      sizes.append(class_sizes)
  elif spec.kind == "xdomain_balanced":
    sizes = [balanced(count) for count in schema_lib.XDOMAIN_CLASS_COUNTS]
  elif spec.kind == "cifar_lt" and split == "train":
    balanced(100)  # the same floor
    by_rank = CIFAR_LT_IMBALANCE_RATIO ** (-np.arange(100) / 99.0)
    permutation = rng.permutation(100)
    class_sizes = np.empty(100, np.int64)
    class_sizes[permutation] = _round_to_total(by_rank / by_rank.sum() * total, total)
    sizes.append(class_sizes)
  elif spec.kind in ("cifar", "cifar_lt"):
    sizes.append(balanced(100))
  else:  # binary attributes: deepfashion, celeba
    rates = (deepfashion_positive_rates() if spec.kind == "deepfashion" else
             CELEBA_POSITIVE_RATES)
    for rate in rates:
      positives = min(max(int(round(rate * total)), 1), total - 1)
      sizes.append(np.array([total - positives, positives], np.int64))
  return sizes


def deepfashion_positive_rates() -> np.ndarray:
  """Positive rates of the 1000 binary attributes: log-uniform from 1/734 to 1/2, so
  the imbalance spans DeepFashion's (up to 1:733, the paper's Table 7)."""
  count = schema_lib.DEEPFASHION_NUM_ATTRIBUTES
  return np.exp(np.linspace(np.log(1 / 734), np.log(0.5), count))[
      np.random.default_rng(97).permutation(count)]


def split_labels(spec: SyntheticSpec, split: str) -> np.ndarray:
  """int32[N, A] labels of a split: exact class sizes, independent shuffles."""
  split_id = SPLITS.index(split)
  rng = np.random.default_rng([spec.seed, split_id, 104729])
  columns = []
  for class_sizes in split_class_sizes(spec, split):
    column = np.repeat(np.arange(len(class_sizes)), class_sizes)
    columns.append(rng.permutation(column))
  return np.stack(columns, axis=1).astype(np.int32)


# ----------------------------------------------------------------------------------
# Drawing helpers (all vectorised over a chunk of N images: arrays [N, S, S]).


def _edge(signed_distance, pixel):
  """Soft inside-ness of a signed distance (positive inside), a one-pixel ramp."""
  return np.clip(0.5 + signed_distance / pixel, 0.0, 1.0)


def _blend(canvas, colour, alpha):
  """canvas f[N,S,S,3] <- alpha f[N,S,S] * colour (f[N,3] or f[N,S,S,3]) + rest."""
  if colour.ndim == 2:
    colour = colour[:, None, None, :]
  alpha = alpha[..., None]
  return canvas * (1.0 - alpha) + colour * alpha


def _hsv_to_rgb(hue, saturation, value):
  hue = np.asarray(hue, np.float64) % 1.0
  i = np.floor(hue * 6.0)
  f = hue * 6.0 - i
  p = value * (1.0 - saturation)
  q = value * (1.0 - f * saturation)
  t = value * (1.0 - (1.0 - f) * saturation)
  i = i.astype(int) % 6
  r = np.choose(i, [value, q, p, p, t, value])
  g = np.choose(i, [t, value, value, q, p, p])
  b = np.choose(i, [p, p, t, value, value, q])
  return np.stack([r, g, b], axis=-1)


def _garment_palette():
  hues = np.repeat(np.arange(11) / 11.0, 5)
  tones = np.array([(0.85, 0.90), (0.55, 0.95), (0.90, 0.60), (0.35, 0.70),
                    (0.70, 0.78)])
  tones = np.tile(tones, (11, 1))
  return _hsv_to_rgb(hues, tones[:, 0], tones[:, 1]).astype(np.float32)  # [55, 3]


_PALETTE = _garment_palette()


def _background(rng, n, size, u, v):
  """Two-colour gradient, two clutter ellipses and a line. Returns f[N,S,S,3]."""
  pixel = 2.0 / size
  first = rng.uniform(0.05, 0.95, (n, 3)).astype(np.float32)
  second = rng.uniform(0.05, 0.95, (n, 3)).astype(np.float32)
  angle = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
  ramp = (np.cos(angle)[:, None, None] * u + np.sin(angle)[:, None, None] * v) * 0.5 + 0.5
  canvas = (first[:, None, None, :] * (1 - ramp[..., None])
            + second[:, None, None, :] * ramp[..., None])
  for _ in range(2):
    centre = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    radii = rng.uniform(0.05, 0.25, (n, 2)).astype(np.float32)
    colour = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    distance = np.sqrt(((u - centre[:, 0, None, None]) / radii[:, 0, None, None]) ** 2
                       + ((v - centre[:, 1, None, None]) / radii[:, 1, None, None]) ** 2)
    canvas = _blend(canvas, colour, 0.5 * _edge((1 - distance) * radii.min(1)[:, None,
                                                                             None],
                                                pixel))
  # A random thin line: distance to an infinite line through a point.
  angle = rng.uniform(0, np.pi, n).astype(np.float32)
  offset = rng.uniform(-0.8, 0.8, n).astype(np.float32)
  distance = np.abs(np.cos(angle)[:, None, None] * u + np.sin(angle)[:, None, None] * v
                    - offset[:, None, None])
  colour = rng.uniform(0, 1, (n, 3)).astype(np.float32)
  return _blend(canvas, colour, 0.5 * _edge(0.03 - distance, pixel))


def _finish(rng, canvas, size, occlusion_probability=0.08, noise=0.025):
  """Occluding patch (sometimes), pixel noise, quantisation to uint8."""
  n = canvas.shape[0]
  occluded = rng.random(n) < occlusion_probability
  corner = rng.integers(0, size - size // 5, (n, 2))
  extent = rng.integers(size // 8, size // 5 + 1, (n, 2))
  colour = rng.uniform(0, 1, (n, 3)).astype(np.float32)
  rows = np.arange(size)
  inside = ((rows[None, :, None] >= corner[:, 0, None, None])
            & (rows[None, :, None] < (corner[:, 0] + extent[:, 0])[:, None, None])
            & (rows[None, None, :] >= corner[:, 1, None, None])
            & (rows[None, None, :] < (corner[:, 1] + extent[:, 1])[:, None, None])
            & occluded[:, None, None])
  canvas = np.where(inside[..., None], colour[:, None, None, :], canvas)
  canvas = canvas + rng.normal(0.0, noise, canvas.shape).astype(np.float32)
  return np.clip(np.round(canvas * 255.0), 0, 255).astype(np.uint8)


def _grid(size):
  coordinates = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
  v, u = np.meshgrid(coordinates, coordinates, indexing="ij")
  return u[None], v[None]  # [1, S, S]: u to the right, v downwards


def _pattern(pattern, x, y):
  """Multiplicative modulation in [0.65, 1.35] of the garment colour. f[N,S,S]."""
  def wave(coordinate, period):
    return np.sin(2 * np.pi * coordinate / period[:, None, None])

  def pick(table):
    return np.asarray(table, np.float32)[pattern]

  modulation = np.zeros_like(x)
  # 1-3 horizontal, 4-6 vertical stripes; 7-8 / 9-10 the two diagonals.
  period = pick([1, .5, .4, .3, .5, .4, .3, .5, .35, .5, .35] + [1] * 9)
  k = pattern[:, None, None]
  modulation = np.where((k >= 1) & (k <= 3), np.sign(wave(y, period)), modulation)
  modulation = np.where((k >= 4) & (k <= 6), np.sign(wave(x, period)), modulation)
  modulation = np.where((k >= 7) & (k <= 8), np.sign(wave(x + y, period * 1.41)),
                        modulation)
  modulation = np.where((k >= 9) & (k <= 10), np.sign(wave(x - y, period * 1.41)),
                        modulation)
  # 11-12 checks, 13-14 dots.
  check_period = pick([1] * 11 + [.5, .35] + [1] * 7)
  checks = np.sign(wave(x, check_period) * wave(y, check_period))
  modulation = np.where((k >= 11) & (k <= 12), checks, modulation)
  dot_period = pick([1] * 13 + [.5, .35] + [1] * 5)
  dots = ((np.cos(2 * np.pi * x / dot_period[:, None, None])
           + np.cos(2 * np.pi * y / dot_period[:, None, None])) > 1.2) * 2.0 - 1.0
  modulation = np.where((k >= 13) & (k <= 14), dots, modulation)
  modulation = np.where(k == 15, np.clip(y * 1.5, -1, 1), modulation)  # gradients
  modulation = np.where(k == 16, np.clip(x * 2.0, -1, 1), modulation)
  grain = np.sign(np.sin(37.0 * x + 11.0 * np.sin(23.0 * y)) * np.sin(29.0 * y))
  modulation = np.where(k == 17, grain, modulation)
  modulation = np.where(k == 18, np.where(np.abs(y + 0.2) < 0.12, -1.0, 0.3), modulation)
  modulation = np.where(k == 19, np.where(x < 0, -0.8, 0.8), modulation)
  return 1.0 + 0.35 * modulation


def render_xdomain(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """Draws garments for a chunk of labels int32[N, 9]. Returns uint8[N, S, S, 3]."""
  n = labels.shape[0]
  (category, colour, collar, button, pattern, shape, length, sleeve_shape,
   sleeve_length) = (labels[:, j] for j in range(9))
  pixel = 2.0 / size
  u, v = _grid(size)
  canvas = _background(rng, n, size, u, v)

  # Per-image jitter: scale and position.
  scale = rng.uniform(0.95, 1.05, n).astype(np.float32)[:, None, None]
  shift = rng.uniform(-0.06, 0.06, (n, 2)).astype(np.float32)
  x = (u - shift[:, 0, None, None]) / scale
  y = (v - shift[:, 1, None, None]) / scale
  local_pixel = pixel / scale

  # Torso: category -> shoulder width and flare; shape -> waist pinch and hem curve;
  # length -> hem position.
  top = -0.62
  shoulder = np.array([0.22, 0.28, 0.34, 0.40], np.float32)[category // 4]
  flare = np.array([-0.06, 0.0, 0.12, 0.28], np.float32)[category % 4]
  hem = shoulder + flare
  pinch = np.array([0.0, 0.06, 0.12, 0.18, 0.24], np.float32)[shape // 3]
  curve = np.array([0.0, 0.18, -0.18], np.float32)[shape % 3]
  bottom = top + np.linspace(0.55, 1.5, 12).astype(np.float32)[length]
  _b = lambda a: a[:, None, None]  # noqa: E731 broadcast a per-image scalar
  hem_line = _b(bottom) + _b(curve) * (x / _b(hem)) ** 2
  t = np.clip((y - top) / (_b(bottom) - top), 0, 1)
  half_width = _b(shoulder) + (_b(hem) - _b(shoulder)) * t - _b(pinch) * np.sin(np.pi * t)
  torso = (_edge(half_width - np.abs(x), local_pixel) * _edge(y - top, local_pixel)
           * _edge(hem_line - y, local_pixel))

  # Neckline: collar // 2 -> the cut, collar % 2 -> white trim.
  cut_kind = collar // 2
  neck_x, neck_y = np.abs(x), y - top
  radius = np.array([.08, .13, .18, .24, 0, 0, 0, 0, 0, 0, 0], np.float32)[cut_kind]
  round_cut = _b(radius) - np.sqrt(neck_x ** 2 + neck_y ** 2)
  v_depth = np.array([0, 0, 0, 0, .18, .3, .42, 0, 0, 0, 0], np.float32)[cut_kind]
  v_cut = np.minimum(_b(v_depth) * (1 - neck_x / 0.16) - neck_y, 0.16 - neck_x)
  square_depth = np.array([0] * 7 + [.12, .22, 0, 0], np.float32)[cut_kind]
  square_cut = np.minimum(_b(square_depth) - neck_y, 0.16 - neck_x)
  boat_cut = 0.09 * (1 - (neck_x / 0.3) ** 2) - neck_y
  cut = np.where(_b(cut_kind) <= 3, round_cut,
                 np.where(_b(cut_kind) <= 6, v_cut,
                          np.where(_b(cut_kind) <= 8, square_cut,
                                   np.where(_b(cut_kind) == 10, boat_cut, -1.0))))
  turtle = (_b(cut_kind) == 9) * _edge(0.13 - neck_x, local_pixel) * _edge(
      neck_y + 0.16, local_pixel) * _edge(-neck_y + 0.02, local_pixel)
  trim = (_b(collar % 2 == 1) * _edge(cut + 0.09, local_pixel)
          * (1 - _edge(cut, local_pixel)) * torso)
  torso = np.maximum(torso * (1 - _edge(cut, local_pixel)), turtle)

  # Sleeves: sleeve_length -> length; sleeve_shape -> cuff ratio and angle.
  sleeve_length_value = np.array([.1, .22, .34, .46, .58, .7], np.float32)[sleeve_length]
  cuff = np.array([.5, .8, 1.1, 1.5, 2.0], np.float32)[sleeve_shape // 4]
  angle = np.deg2rad(np.array([28, 42, 56, 70], np.float32)[sleeve_shape % 4])
  sleeves = np.zeros_like(torso)
  for side in (-1.0, 1.0):
    direction_x, direction_y = side * np.sin(angle), np.cos(angle)
    px = x - side * _b(shoulder)
    py = y - (top + 0.04)
    along = px * _b(direction_x) + py * _b(direction_y)
    across = np.abs(px * _b(direction_y) - py * _b(direction_x))
    width = 0.1 * (1 + (_b(cuff) - 1) * np.clip(along / _b(sleeve_length_value), 0, 1))
    sleeve = (_edge(along, local_pixel) * _edge(_b(sleeve_length_value) - along,
                                                local_pixel)
              * _edge(width - across, local_pixel))
    sleeves = np.maximum(sleeves, sleeve)

  # Colour, illumination and pattern.
  illumination = rng.uniform(0.85, 1.15, (n, 1)).astype(np.float32)
  base = np.clip(_PALETTE[colour] * illumination
                 + rng.normal(0, 0.02, (n, 3)).astype(np.float32), 0, 1)
  modulation = _pattern(pattern, x, y)[..., None]
  garment_colour = np.clip(base[:, None, None, :] * modulation, 0, 1)
  # Sleeves go over the torso, a shade darker, so they are visible whatever the
  # silhouette (a sleeve drawn underneath can hide entirely inside a flared torso).
  canvas = _blend(canvas, garment_colour, torso)
  canvas = _blend(canvas, garment_colour * 0.7, sleeves)
  canvas = _blend(canvas, np.full((n, 3), 0.95, np.float32), trim)

  # Buttons: class 0 none; 1-10 one to five buttons, dark (odd) or light (even);
  # 11 a zip down the front.
  count = np.where((button >= 1) & (button <= 10), (button + 1) // 2, 0)
  spacing = (bottom - top - 0.34) / 5.0
  button_colour = np.where((button % 2 == 0)[:, None], 0.95, 0.08).astype(np.float32)
  button_colour = np.repeat(button_colour, 3, axis=1)
  for k in range(5):
    centre_y = top + 0.27 + k * spacing
    distance = np.sqrt(x ** 2 + (y - _b(centre_y)) ** 2)
    dot = _b(k < count) * _edge(0.075 - distance, local_pixel)
    canvas = _blend(canvas, button_colour, dot)
  zip_line = (_b(button == 11) * _edge(0.04 - np.abs(x), local_pixel)
              * _edge(y - (top + 0.12), local_pixel) * _edge(hem_line - 0.06 - y,
                                                            local_pixel))
  canvas = _blend(canvas, np.full((n, 3), 0.75, np.float32), zip_line)
  return _finish(rng, canvas, size)


_CELEBA_MARK_COLOURS = _hsv_to_rgb(np.arange(40) * 0.618034 % 1.0,
                                   np.full(40, 0.85), np.full(40, 0.9)).astype(np.float32)


def render_celeba(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """Draws faces with 40 binary cues for a chunk of labels int32[N, 40]."""
  n = labels.shape[0]
  pixel = 2.0 / size
  u, v = _grid(size)
  canvas = _background(rng, n, size, u, v)
  _b = lambda a: a[:, None, None]  # noqa: E731
  shift = rng.uniform(-0.06, 0.06, (n, 2)).astype(np.float32)
  x, y = u - _b(shift[:, 0]), v - _b(shift[:, 1])
  pale = labels[:, schema_lib.CELEBA_ATTRIBUTES.index("Pale_Skin")] == 1
  skin = np.where(pale[:, None], [0.96, 0.88, 0.84], [0.78, 0.58, 0.45]).astype(np.float32)
  skin = np.clip(skin * rng.uniform(0.9, 1.1, (n, 1)).astype(np.float32), 0, 1)
  width = np.where(labels[:, schema_lib.CELEBA_ATTRIBUTES.index("Male")] == 1, 0.5, 0.42)
  face = np.sqrt((x / _b(width.astype(np.float32))) ** 2 + (y / 0.62) ** 2)
  canvas = _blend(canvas, skin, _edge((1 - face) * 0.4, pixel))
  # Every other attribute: a small mark of its own colour at its own place on an 8x5
  # grid over the image (jittered by the face shift).
  cell = 2.0 / np.array([8, 5], np.float32)
  for j in range(40):
    if schema_lib.CELEBA_ATTRIBUTES[j] in ("Pale_Skin", "Male", "Blurry"):
      continue
    row, column = divmod(j, 5)
    centre_y = -1 + (row + 0.5) * cell[0]
    centre_x = -1 + (column + 0.5) * cell[1]
    mark = np.maximum(np.abs(x - centre_x), np.abs(y - centre_y))
    alpha = _b(labels[:, j] == 1) * _edge(0.09 - mark, pixel)
    canvas = _blend(canvas, np.broadcast_to(_CELEBA_MARK_COLOURS[j], (n, 3)), alpha)
  blurry = labels[:, schema_lib.CELEBA_ATTRIBUTES.index("Blurry")] == 1
  blurred = (canvas + np.roll(canvas, 1, 1) + np.roll(canvas, -1, 1)
             + np.roll(canvas, 1, 2) + np.roll(canvas, -1, 2)) / 5.0
  canvas = np.where(blurry[:, None, None, None], blurred, canvas)
  return _finish(rng, canvas, size, occlusion_probability=0.05)


def _random_garment_labels(rng, n):
  return np.stack([rng.integers(0, c, n) for c in schema_lib.XDOMAIN_CLASS_COUNTS],
                  axis=1).astype(np.int32)


def render_cifar(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """100 object classes as garments: class ``c`` fixes the category (``c mod 16``) and
  the colour (``7c + 3 mod 55``), a unique pair per class; the other garment
  attributes are random nuisance."""
  garments = _random_garment_labels(rng, labels.shape[0])
  garments[:, 0] = labels[:, 0] % 16
  garments[:, 1] = (7 * labels[:, 0] + 3) % 55
  return render_xdomain(garments, size, rng)


def render_deepfashion(labels: np.ndarray, size: int,
                       rng: np.random.Generator) -> np.ndarray:
  """1000 binary attributes: a random garment, and attribute ``k`` darkens or lightens
  cell ``k`` of a 32x32 grid over the image (visible from 64x64 up)."""
  n = labels.shape[0]
  images = render_xdomain(_random_garment_labels(rng, n), size, rng).astype(np.float32)
  cells = 32
  edges = np.linspace(0, size, cells + 1).astype(int)
  rows = np.searchsorted(edges, np.arange(size), side="right") - 1
  cell_index = rows[:, None] * cells + rows[None, :]  # [S, S], row-major cells
  grid = np.zeros((n, cells * cells), np.float32)
  grid[:, :labels.shape[1]] = labels
  on = grid[:, cell_index]  # [N, S, S]
  shade = np.where(np.arange(cells * cells) % 2 == 0, 0.0, 255.0)[cell_index]
  images = images * (1 - 0.6 * on[..., None]) + 0.6 * on[..., None] * shade[..., None]
  return np.clip(np.round(images), 0, 255).astype(np.uint8)


RENDERERS = {"xdomain": render_xdomain, "xdomain_balanced": render_xdomain,
             "celeba": render_celeba, "cifar": render_cifar, "cifar_lt": render_cifar,
             "deepfashion": render_deepfashion}


BLOCK = 500


def generate_blocks(spec: SyntheticSpec,
                    split: str) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
  """Yields ``(start, images uint8[n, S, S, 3], labels int32[n, A])`` covering a split.

  Blocks of ``BLOCK`` images draw their nuisance randomness from
  ``default_rng([seed, split, block, 31337])``, so the bytes of an image depend only on
  the spec, its split and its index.
  """
  labels = split_labels(spec, split)
  render = RENDERERS[spec.kind]
  split_id = SPLITS.index(split)
  for start in range(0, len(labels), BLOCK):
    rng = np.random.default_rng([spec.seed, split_id, start // BLOCK, 31337])
    block_labels = labels[start:start + BLOCK]
    yield start, render(block_labels, spec.image_size, rng), block_labels
