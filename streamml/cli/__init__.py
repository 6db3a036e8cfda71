"""The ``streamml`` command: one module per command group.

    streamml up                     # embedded Kafka-protocol broker + Ceph + the five services
    streamml status                 # health of each component
    streamml topics apply           # create the declared topics
    streamml datasets validate examples/datasets/transactions.yaml
    streamml down

Commands that talk to Kafka or S3 read the same STREAMML_* settings as the
services; after ``streamml up`` they default to the embedded stack's
``.streamml/config.yaml``.

The CLI sits above the core package and the services: it imports both, and
neither imports it. It reads the object store only through
``streamml.registry``.
"""

from streamml.cli.app import app, main

__all__ = ["app", "main"]
