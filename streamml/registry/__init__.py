"""The object store's layout and its typed readers: the contract every part reads.

Ingest, prep, the trainer, the validator and the monitor each write their
own objects; the CLI, the SDK, the services and any console read them. Keys
are built only by :mod:`streamml.registry.keys`, and read only through:

- :mod:`streamml.registry.datasets`: raw objects, dataset versions, manifests;
- :mod:`streamml.registry.models`: model versions, cards, the champion pointer;
- :mod:`streamml.registry.decisions`: the validator's decision on a version;
- :mod:`streamml.registry.champion`: moving the champion pointer (compare-and-swap);
- :mod:`streamml.registry.monitor`: the monitor's reports, events and drift episodes.

A missing document reads as None (or ObjectNotFound where one must exist); one
that does not parse is a RegistryError naming its key and the fix
(:mod:`streamml.registry.documents`).

Writers stay in the service that owns the objects and build their keys here.
The champion pointer is the one exception: the validator, ``streamml models``
and the console all move it, so its compare-and-swap is here too
(:mod:`streamml.registry.champion`).
"""
