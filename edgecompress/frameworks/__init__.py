"""Framework adapters: the only modules that import torch (and, later, TensorFlow/Keras)."""
