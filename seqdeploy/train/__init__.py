"""Training: a Keras model from a spec, fitted into a run directory (``local.py``)."""
from seqdeploy.train.local import (  # noqa: F401  (the public training API)
    TrainResult, build_model, default_run_dir, make_layer, target_unit_metrics, train, train_spec,
)
