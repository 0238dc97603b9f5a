"""Flooding (Ishida et al. 2020): optimise |L - b| + b, so that below the flood level b the
gradient pushes the loss back *up* - a random walk around b instead of memorisation."""

from __future__ import annotations

from keras import ops


def flooded(loss, level):
    """|L - b| + b. Equal to L above b; its gradient is -dL/dtheta below b."""
    return ops.abs(loss - level) + level


def flooded_gradient_only(loss, level):
    """Value L (so the reported loss stays the true one), gradient of |L - b| + b."""
    surrogate = flooded(loss, level)
    return surrogate + ops.stop_gradient(loss - surrogate)
