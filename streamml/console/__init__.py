"""The web console: models, lineage, datasets, drift and the live loop, for people who would rather look.

    streamml console                   # http://127.0.0.1:8090, read-only
    STREAMML_CONSOLE_TOKEN=... streamml console   # promote and rollback enabled for whoever gives the token

It reads the object store only through ``streamml.registry`` and follows the
event topics on Kafka; it keeps no database. It sits beside the CLI, above
the core package, and imports nothing from the services. ``server.py`` runs
the process, ``app.py`` serves the pages, ``pages/`` gathers what each shows,
``live.py`` follows the events, ``status.py`` measures health and lag,
``actions.py`` moves champion pointers.
"""
