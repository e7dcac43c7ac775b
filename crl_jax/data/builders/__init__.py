"""tfds builders that live inside the package (tfds needs builders in a package)."""
