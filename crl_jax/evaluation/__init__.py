"""Evaluation: confusion matrices summed on device -> class-balanced accuracy."""
