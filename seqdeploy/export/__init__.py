"""Keras → ONNX: conversion (convert.py), the generic cut/stitch of layer converters (native.py), the layer
converter registry (layers/), the ordered graph fixes (fixes.py), graph helpers (graph.py), opsets (opsets.py)."""
