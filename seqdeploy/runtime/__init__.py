"""The base-install runtime: what an application embedding a bundle needs (numpy + onnxruntime only).

``Predictor`` runs a bundle; ``session.py`` is the one onnxruntime session factory and its settings;
``fastpath.py``/``ort_capi.py`` the per-call fast paths; ``manifest.py`` the bundle manifest schema.
"""
from seqdeploy.runtime.predictor import (  # noqa: F401  (the public runtime API)
    DEFAULT_BATCH_SIZE, FastSession, Predictor, RuntimeInfo, make_session, session_options,
)

__all__ = ["Predictor", "FastSession", "RuntimeInfo", "session_options", "make_session", "DEFAULT_BATCH_SIZE"]
