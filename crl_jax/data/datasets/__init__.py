"""One module per dataset, each a ``from_config`` named in ``data.SOURCES``: the bundled
``synthetic_attributes``, ``csv`` (any CSV + image folder, and ``xdomain``),
``deep_fashion``, ``celeb_a`` and ``cifar100`` (with the CIFAR-100 imbalance
protocols)."""
