"""Importers of models trained in other frameworks (TensorFlow DeepLab's TFLite graphs first)."""

from atrous.convert.tf_deeplab import convert_tflite
from atrous.convert.tflite_reader import read_tflite

__all__ = ["convert_tflite", "read_tflite"]
