"""Bundles: the manifest writer and the portable deployment graph."""
