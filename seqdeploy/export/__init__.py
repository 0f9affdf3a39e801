"""Keras → ONNX: conversion, the ordered graph fixes, native layer converters (layers/)."""
