"""The base-install runtime: what an application embedding a bundle needs (numpy + onnxruntime only).

``Predictor`` runs a bundle; ``session.py`` is the one onnxruntime session factory and its settings;
``fastpath.py``/``ort_capi.py`` the per-call fast paths; ``manifest.py`` the bundle manifest schema.
"""
from seqdeploy.runtime.predictor import DEFAULT_BATCH_SIZE, FastSession, Predictor, RuntimeInfo  # noqa: F401
from seqdeploy.runtime.session import ORT_TYPES, SessionSettings, make_session, session_options  # noqa: F401

__all__ = ["Predictor", "FastSession", "RuntimeInfo", "SessionSettings", "session_options", "make_session",
           "DEFAULT_BATCH_SIZE", "ORT_TYPES"]
