"""Image files on disk: the checks run before training and the decoder (Pillow).

Sources that list image files (``csv``, ``xdomain``, ``deep_fashion``) check every file
once, up front, in ``prepare()`` (``verify_images``):

* ``header`` (default, cheap): the file exists, is not empty, starts with a JPEG, PNG,
  GIF or BMP signature, and is *complete*: a PNG's chunks run to ``IEND``, a JPEG has an
  end-of-image marker after its start of scan, a GIF ends with its trailer byte, a BMP is
  as long as its header says. Most files are settled by reading their first and last
  bytes; a JPEG with bytes after its end marker is read once in full.
* ``decode`` (slow): also decodes every file once, which finds bytes corrupted
  *inside* a complete file.

A truncated or corrupt image stops the run with one line naming the file, rather than
being skipped with a warning: skipping would silently change the training set (its class
counts, Omega_imb and alpha are computed from the label list, which would still hold the
file) and make two runs of one config see different data. The user fixes or removes the
file, or finds every bad file at once with ``verify_images=decode``.

Files damaged *after* the check (the check is remembered per CSV and config) fail when
the input pipeline decodes them: ``decode_image_file`` raises a ``DataError`` naming the
file, which stops the run with that one line.
"""

from __future__ import annotations

import io
import os
import struct
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from crl_jax.data import errors

IMAGE_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"),
                    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"))
VERIFY_MODES = ("header", "decode")
_TAIL_BYTES = 64


def _png_problem(f, size: int) -> Optional[str]:
  """Walks the chunks (length, type, data, CRC) to ``IEND``; ``None`` if complete."""
  position = 8
  while position + 8 <= size:
    f.seek(position)
    length, kind = struct.unpack(">I4s", f.read(8))
    position += 12 + length
    if kind == b"IEND":
      return None if position <= size else "is truncated (its IEND chunk is cut)"
  return f"is truncated ({size} bytes; its PNG chunks stop before IEND)"


def _jpeg_problem(f, size: int) -> Optional[str]:
  """An end-of-image marker (FFD9) after the start of scan; ``None`` if found."""
  f.seek(max(0, size - _TAIL_BYTES))
  if f.read().rstrip(b"\x00").endswith(b"\xff\xd9"):
    return None  # the common case: the file ends with its end marker
  f.seek(0)
  data = f.read()
  position = 2
  while position + 4 <= len(data):  # marker segments up to the start of scan (FFDA)
    if data[position] != 0xFF:
      return "is corrupt (a JPEG segment does not start with a marker)"
    marker = data[position + 1]
    if marker == 0xFF:
      position += 1  # fill byte
      continue
    if marker == 0xDA:
      break
    if marker in (0x01, *range(0xD0, 0xD8)):
      position += 2
      continue
    position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
  else:
    return f"is truncated ({size} bytes; it ends before the JPEG image data)"
  if data.find(b"\xff\xd9", position) < 0:
    return (f"is truncated ({size} bytes; the JPEG image data has no end-of-image "
            "marker)")
  return None


def _gif_problem(f, size: int) -> Optional[str]:
  f.seek(max(0, size - _TAIL_BYTES))
  if f.read().rstrip(b"\x00").endswith(b";"):
    return None
  return f"is truncated ({size} bytes; no GIF trailer at its end)"


def _bmp_problem(f, size: int) -> Optional[str]:
  f.seek(2)
  declared = int.from_bytes(f.read(4), "little")
  if declared > size:
    return f"is truncated ({size} bytes; its BMP header says {declared})"
  return None


_COMPLETENESS = {"PNG": _png_problem, "JPEG": _jpeg_problem, "GIF": _gif_problem,
                 "BMP": _bmp_problem}


def _contents_problem(f, size: int) -> Optional[str]:
  """Why the open file ``f`` of ``size`` bytes cannot be a complete image, or ``None``."""
  head = f.read(16)
  if not head:
    return "is empty"
  kinds = [kind for signature, kind in IMAGE_SIGNATURES if head.startswith(signature)]
  if not kinds:
    return f"is not a JPEG, PNG, GIF or BMP file (it starts with {head[:8]!r})"
  return _COMPLETENESS[kinds[0]](f, size)


def image_file_problem(path: str) -> Optional[str]:
  """Why ``path`` cannot be a complete image (``None`` if it looks fine).

  Args:
    path: an image file.

  Returns:
    ``None``, or a phrase to follow the path, e.g. ``"does not exist"``,
    ``"is truncated (812 bytes; its PNG chunks stop before IEND)"``.
  """
  try:
    with open(path, "rb") as f:
      return _contents_problem(f, os.fstat(f.fileno()).st_size)
  except FileNotFoundError:
    return "does not exist"
  except OSError as error:
    return f"cannot be read ({error.strerror or error})"


def bad_image_files(paths: Sequence[str]) -> list[tuple[str, str]]:
  """``(path, problem)`` of every file ``image_file_problem`` finds fault with."""
  bad = []
  for path in paths:
    problem = image_file_problem(path)
    if problem is not None:
      bad.append((path, problem))
  return bad


def check_image_files(paths: Sequence[str], what: str,
                      verify_option: str = "verify_images") -> None:
  """Raises ``DataError`` naming the first missing, empty, unknown or truncated file.

  Args:
    paths: image file paths.
    what: where the paths come from, for the message (e.g. the CSV's path).
    verify_option: the config key of the check, named in the message.
  """
  bad = bad_image_files(paths)
  if bad:
    path, problem = bad[0]
    raise errors.DataError(
        f"image file {path} (listed in {what}) {problem}; {len(bad)} of {len(paths)} "
        f"image files are bad" + (f", e.g. also {bad[1][0]}" if len(bad) > 1 else "") +
        f". Fix or remove them and run again ({verify_option}=decode also decodes "
        "every image up front, to find files corrupt inside).")


def decode_image_file(path: str, what: Optional[str] = None,
                      verify_option: str = "verify_images") -> np.ndarray:
  """uint8[H, W, 3] of the image file at ``path`` (Pillow; a GIF's first frame; grey,
  palette and alpha images converted to RGB).

  Args:
    path: the file.
    what: where the path was listed (e.g. the CSV), for the message.
    verify_option: the config key of the up-front check, named in the message.

  Raises:
    DataError: the file is missing, unreadable, not an image or corrupt; the message
      names the file and the check that finds every bad file before training.
  """
  try:
    with open(path, "rb") as f:
      contents = f.read()
  except FileNotFoundError:
    problem = "does not exist"
  except OSError as error:
    problem = f"cannot be read ({error.strerror or error})"
  else:
    # The completeness check of ``verify_images=header``, on the bytes read anyway:
    # Pillow decodes some cut files (a PNG without its last chunks) without a word.
    problem = _contents_problem(io.BytesIO(contents), len(contents))
    if problem is None:
      try:
        with Image.open(io.BytesIO(contents)) as image:
          image.seek(0)
          return np.asarray(image.convert("RGB"))
      except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        problem = f"cannot be decoded ({error})"
  listed = f" (listed in {what})" if what else ""
  raise errors.DataError(f"image file {path}{listed} {problem}. Fix or remove it; "
                         f"{verify_option}=decode checks every image before training.")


def find_undecodable_images(paths: Sequence[str]) -> list[tuple[str, str]]:
  """``(path, error)`` of every file ``decode_image_file`` cannot decode (slow: decodes
  each file once)."""
  bad = []
  for path in paths:
    try:
      decode_image_file(path)
    except errors.DataError as error:
      bad.append((path, str(error)[len(f"image file {path} "):].split(". Fix or")[0]))
  return bad
