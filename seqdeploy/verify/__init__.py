"""Verification: parity with Keras, the mismatch locator, the portable-graph check."""
