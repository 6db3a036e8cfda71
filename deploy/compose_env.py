"""Write the credentials docker-compose.yml requires into .env, once.

    python deploy/compose_env.py        # then: docker compose up -d --build

docker-compose.yml has no default credentials: it refuses to start until
STREAMML_S3_ACCESS_KEY, STREAMML_S3_SECRET_KEY and GRAFANA_ADMIN_PASSWORD
are set. This writes random ones to .env (mode 0600, created with that mode)
next to docker-compose.yml, and never replaces a file that exists: delete it
to start over (with new volumes, since MinIO keeps the old keys).
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def credentials() -> dict[str, str]:
    return {
        "STREAMML_S3_ACCESS_KEY": "streamml-" + secrets.token_hex(6),
        "STREAMML_S3_SECRET_KEY": secrets.token_urlsafe(30),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_urlsafe(18),
    }


def ensure_env_file(path: Path) -> bool:
    """Write fresh credentials to ``path`` unless it exists; True when written."""
    text = "".join(f"{name}={value}\n" for name, value in credentials().items())
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as env:
        env.write("# Written by deploy/compose_env.py; docker compose reads it.\n" + text)
    return True


def main() -> None:
    path = REPO / ".env"
    if ensure_env_file(path):
        print(f"wrote new credentials to {path} (mode 0600)")
    else:
        print(f"{path} exists; left as it is", file=sys.stderr)


if __name__ == "__main__":
    main()
