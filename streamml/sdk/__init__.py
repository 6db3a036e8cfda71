"""What an application needs to serve streamml models.

- ``ModelClient`` (``client``): the champion of one model, loaded at start,
  swapped live on promotion, every prediction logged for the monitor. Most
  applications need nothing else (its docstring is a runnable example).
- ``FeatureTransform`` (``preprocess``): records to model inputs, as prep did it.
- ``InputRules`` / ``InputRejected`` (``input_checks``): each record checked against
  the dataset spec with ingest's rules; the client's ``input_checks`` rejects,
  flags (the default) or lets it pass.
- ``ModelSlot`` / ``ModelSnapshot`` (``swap``): the served version, replaced
  atomically when a ``model.promoted`` event arrives.
- ``PredictionLog`` (``prediction_log``): predictions to the monitor without
  slowing the request path.
- ``registry``: where models and the champion pointer live in the object store.
- ``find_settings`` (``streamml.locate``): the settings of the stack or deployment,
  found as every ``streamml`` command finds them (``STREAMML_STACK_DIR``, the
  nearest ``.streamml/``, or ``STREAMML_*`` settings).

    slot = ModelSlot("fraud")
    slot.swap(ModelSnapshot(version, program, FeatureTransform.from_card(card)))
    result = slot.predict([{"amount": 12.5, "hour": 3, "channel": "web"}])
"""

import importlib

# Imported on first use: the client pulls in torch, which services that only
# read the registry layout (the monitor, say) should not pay for at start.
_HOMES = {
    "ModelClient": "client", "Predictions": "client",
    "LogStats": "prediction_log", "PredictionLog": "prediction_log",
    "InputRejected": "input_checks", "InputRules": "input_checks",
    "Features": "preprocess", "FeatureTransform": "preprocess", "PreprocessError": "preprocess",
    "ChampionPointer": "registry", "RegistryError": "registry",
    "ModelSlot": "swap", "ModelSnapshot": "swap", "NoModelLoaded": "swap", "Prediction": "swap",
    "find_settings": "streamml.locate", "StackNotFound": "streamml.locate",
}


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'streamml.sdk' has no attribute {name!r}")
    home = _HOMES[name]
    return getattr(importlib.import_module(home if "." in home else f"streamml.sdk.{home}"), name)


__all__ = [
    "ChampionPointer",
    "Features",
    "FeatureTransform",
    "InputRejected",
    "InputRules",
    "LogStats",
    "ModelClient",
    "ModelSlot",
    "ModelSnapshot",
    "NoModelLoaded",
    "Prediction",
    "PredictionLog",
    "Predictions",
    "PreprocessError",
    "RegistryError",
    "StackNotFound",
    "find_settings",
]
