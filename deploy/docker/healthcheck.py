#!/usr/bin/env python3
"""Container health check: exit 0 when the service answers /readyz with 200.

Docker's HEALTHCHECK and docker compose's `service_healthy` use it; on
Kubernetes the probes call /healthz and /readyz directly.
"""

import os
import sys
import urllib.error
import urllib.request

port = os.environ.get("STREAMML_HTTP_PORT", "8080")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except (OSError, urllib.error.URLError) as error:
    print(f"streamml-healthcheck: 127.0.0.1:{port}/readyz: {error}", file=sys.stderr)
    sys.exit(1)
