"""Images: the checks run on image files before training, and the one decode-and-resize
path (Pillow) every source's images go through.

Sources that list image files (``csv``, ``xdomain``, ``deep_fashion``) check every file
once, up front, in ``prepare()`` (``verify_images``, one of ``VERIFY_MODES``):

* ``header`` (default, cheap): the file exists, is not empty, Pillow opens it as a
  JPEG, PNG, GIF or BMP (its signature and header), and it is *complete*: a PNG's chunks
  run to ``IEND`` with valid checksums (``Image.verify``), a JPEG ends with its
  end-of-image marker, a GIF with its trailer. Any other file (a BMP, a JPEG with bytes
  after its end marker) is decoded once to be sure.
* ``decode`` (slow): also decodes every file once, which finds bytes corrupted
  *inside* a complete file.

A truncated or corrupt image stops the run with one line naming the file, rather than
being skipped with a warning: skipping would silently change the training set (its class
counts, Omega_imb and alpha are computed from the label list, which would still hold the
file) and make two runs of one config see different data. The user fixes or removes the
file, or finds every bad file at once with ``verify_images=decode``.

Files damaged *after* the check (the check is remembered per CSV and config) fail when
the input pipeline decodes them: ``decode_image_file`` checks a PNG's chunks before
decoding (Pillow decodes a PNG cut after its image data without a word; it refuses the
other cut files itself) and raises a ``DataError`` naming the file, which stops the run
with that one line.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO, Optional, Sequence, Union

import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError

from crl_jax.data import errors

FORMATS = ("JPEG", "PNG", "GIF", "BMP")
# Their signatures, to tell a cut header from a file of another kind.
_SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF8": "GIF",
               b"BM": "BMP"}
VERIFY_MODES = ("header", "decode")
# The last bytes of a complete file: a JPEG's end-of-image marker, a GIF's trailer.
_ENDINGS = {"JPEG": b"\xff\xd9", "GIF": b";"}
_TAIL_BYTES = 64
# What Pillow raises for a file it cannot open, verify or decode.
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError,
                  Image.DecompressionBombError)


def resize(image: Union[np.ndarray, Image.Image], size: Optional[int]) -> np.ndarray:
  """uint8[size, size, 3] from uint8[H, W, 3] or an RGB Pillow image: bilinear,
  antialiased when shrinking (Pillow's filter widens with the scale); unchanged when
  already that size or ``size`` is ``None``."""
  if isinstance(image, np.ndarray):
    if size is None or image.shape[:2] == (size, size):
      return image
    image = Image.fromarray(image)
  if size is not None and image.size != (size, size):
    image = image.resize((size, size), Image.BILINEAR)
  return np.asarray(image)


def _opened(f: BinaryIO, length: int) -> tuple[Optional[str], Optional[Image.Image]]:
  """``(None, the image as Pillow opened it)`` or ``(why it is not a readable image,
  None)``: Pillow opens it as one of ``FORMATS``, and a PNG's chunks run to ``IEND``
  with valid checksums (``Image.verify``, after which Pillow opens it again)."""
  head = f.read(8)
  f.seek(0)
  if not head:
    return "is empty", None
  try:
    image = Image.open(f, formats=FORMATS)
    if image.format == "PNG":
      image.verify()
      f.seek(0)
      image = Image.open(f, formats=FORMATS)
    return None, image
  except UnidentifiedImageError:
    kinds = [kind for signature, kind in _SIGNATURES.items()
             if head.startswith(signature)]
    if kinds:
      return (f"is truncated or corrupt ({length} bytes; Pillow cannot read its "
              f"{kinds[0]} header)"), None
    return f"is not a JPEG, PNG, GIF or BMP file (it starts with {head!r})", None
  except _PILLOW_ERRORS as error:
    return f"is truncated or corrupt ({length} bytes; {error})", None


def _decode(image: Image.Image, size: Optional[int]) -> np.ndarray:
  """uint8[H, W, 3] (or ``[size, size, 3]``) of an image ``_opened`` gave: a GIF's first
  frame; grey, palette and alpha images converted to RGB. With ``size``, a JPEG at least
  twice as large as ``size`` on both sides is decoded at a reduced scale first (libjpeg's
  DCT scaling by 1/2, 1/4 or 1/8, never below ``size``): most of a JPEG's decoding cost
  goes, and the reduced image is an area average of the full one."""
  with image:
    image.seek(0)
    if size is not None and image.format == "JPEG":
      image.draft("RGB", (size, size))
    return resize(image.convert("RGB"), size)


def _unreadable(error: OSError) -> str:
  if isinstance(error, FileNotFoundError):
    return "does not exist"
  return f"cannot be read ({error.strerror or error})"


def image_file_problem(path: str, decode: bool = False) -> Optional[str]:
  """Why ``path`` cannot be a complete image (``None`` if it looks fine).

  Args:
    path: an image file.
    decode: also decode the file (``verify_images=decode``).

  Returns:
    ``None``, or a phrase to follow the path, e.g. ``"does not exist"``,
    ``"is truncated or corrupt (812 bytes; Truncated File Read)"``.
  """
  try:
    with open(path, "rb") as f:
      length = os.fstat(f.fileno()).st_size
      f.seek(max(0, length - _TAIL_BYTES))
      tail = f.read().rstrip(b"\x00")
      f.seek(0)
      problem, image = _opened(f, length)
      if problem is not None:
        return problem
      ending = _ENDINGS.get(image.format)
      complete = image.format == "PNG" or (ending is not None and tail.endswith(ending))
      if complete and not decode:
        image.close()
        return None
      try:
        _decode(image, None)
      except _PILLOW_ERRORS as error:
        return (f"cannot be decoded ({error})" if complete else
                f"is truncated ({length} bytes; {error})")
      return None
  except OSError as error:
    return _unreadable(error)


def check_image_files(paths: Sequence[str], what: str,
                      verify_option: str = "verify_images",
                      decode: bool = False) -> None:
  """Raises ``DataError`` naming the first missing, empty, unknown, truncated (or, with
  ``decode``, undecodable) file.

  Args:
    paths: image file paths.
    what: where the paths come from, for the message (e.g. the CSV's path).
    verify_option: the config key of the check, named in the message.
    decode: also decode every file (``verify_images=decode``).
  """
  bad = [(path, problem) for path in paths
         if (problem := image_file_problem(path, decode)) is not None]
  if bad:
    path, problem = bad[0]
    raise errors.DataError(
        f"image file {path} (listed in {what}) {problem}; {len(bad)} of {len(paths)} "
        f"image files are bad" + (f", e.g. also {bad[1][0]}" if len(bad) > 1 else "") +
        ". Fix or remove them and run again" + ("." if decode else
        f" ({verify_option}=decode also decodes every image up front, to find files "
        "corrupt inside)."))


def decode_image(payload: bytes, size: Optional[int] = None
                 ) -> tuple[Optional[np.ndarray], Optional[str]]:
  """``(uint8[H, W, 3] or uint8[size, size, 3], None)`` of an encoded image
  (``_opened``, then ``_decode``), or ``(None, why it cannot be decoded)``."""
  problem, image = _opened(io.BytesIO(payload), len(payload))
  if problem is not None:
    return None, problem
  try:
    return _decode(image, size), None
  except _PILLOW_ERRORS as error:
    return None, f"cannot be decoded ({error})"


def decode_image_file(path: str, what: Optional[str] = None,
                      verify_option: str = "verify_images",
                      size: Optional[int] = None) -> np.ndarray:
  """uint8[H, W, 3] of the image file at ``path``, or uint8[size, size, 3] when ``size``
  is given (``decode_image``).

  Args:
    path: the file.
    what: where the path was listed (e.g. the CSV), for the message.
    verify_option: the config key of the up-front check, named in the message.
    size: the side of the square output (``None``: the image as stored).

  Raises:
    DataError: the file is missing, unreadable, not an image, cut or corrupt; the
      message names the file and the check that finds every bad file before training.
  """
  try:
    with open(path, "rb") as f:
      image, problem = decode_image(f.read(), size)
  except OSError as error:
    image, problem = None, _unreadable(error)
  if problem is None:
    return image
  listed = f" (listed in {what})" if what else ""
  raise errors.DataError(f"image file {path}{listed} {problem}. Fix or remove it; "
                         f"{verify_option}=decode checks every image before training.")
