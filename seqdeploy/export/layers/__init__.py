"""Keras layer converters, one module per layer family."""
