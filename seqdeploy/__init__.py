"""seqdeploy: Keras Sequential models compiled into verified, benchmarked ONNX bundles.

The package root stays light: importing it never imports TensorFlow.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
