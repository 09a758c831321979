"""``class_labels``, the one argmax over classes; it lives in the leaf ``atrous.labels``."""

from atrous.labels import class_labels

__all__ = ["class_labels"]
