"""What an application needs to serve streamml models.

- ``FeatureTransform`` (``preprocess``): records to model inputs, as prep did it.
- ``ModelSlot`` / ``ModelSnapshot`` (``swap``): the served version, replaced
  atomically when a ``model.promoted`` event arrives.
- ``PredictionLog`` (``prediction_log``): predictions to the monitor without
  slowing the request path.
- ``registry``: where models and the champion pointer live in the object store.

    slot = ModelSlot("fraud")
    slot.swap(ModelSnapshot(version, program, FeatureTransform.from_card(card)))
    result = slot.predict([{"amount": 12.5, "hour": 3, "channel": "web"}])
"""

from streamml.sdk.prediction_log import LogStats, PredictionLog
from streamml.sdk.preprocess import Features, FeatureTransform, PreprocessError
from streamml.sdk.registry import ChampionPointer, RegistryError
from streamml.sdk.swap import ModelSlot, ModelSnapshot, NoModelLoaded, Prediction

__all__ = [
    "ChampionPointer",
    "Features",
    "FeatureTransform",
    "LogStats",
    "ModelSlot",
    "ModelSnapshot",
    "NoModelLoaded",
    "Prediction",
    "PredictionLog",
    "PreprocessError",
    "RegistryError",
]
