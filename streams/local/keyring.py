"""A keyring for a local set-up (`sendgate demo`, `sendgate keyring init`, the tests and the bench):
one key of each role with a fresh random secret, and a key for each app named."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Iterable

from sendgate.models.sources import APP, GATEWAY, NETWORK, OPERATOR, ROLES, WORKER, Keyring

# the key id of each role's key, and of an app's key (`app_key_id`)
LOCAL_KEYS = {OPERATOR: "local-operator", WORKER: "local-worker", NETWORK: "local-network", GATEWAY: "local-gateway"}
assert set(LOCAL_KEYS) == set(ROLES) - {APP}


def app_key_id(app: str) -> str:
    return f"local-app-{app}"


def write_local_keyring(path: str | os.PathLike, apps: Iterable[str] = ()) -> Keyring:
    """Write a keyring file (readable by its owner only) and return it as the worker will read it."""
    lines = [
        "# sendgate keyring: who may publish what (docs/security-and-privacy.md, Sources). Secrets: keep this file private.\n"
    ]
    entries = [(key_id, role, None) for role, key_id in LOCAL_KEYS.items()]
    entries += [(app_key_id(app), APP, app) for app in apps]
    for key_id, role, app in entries:
        lines.append(
            f'\n[[keys]]\nid = "{key_id}"\nrole = "{role}"\n'
            + (f'app = "{app}"\n' if app else "")
            + f'secret = "{secrets.token_hex(32)}"\n'
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("".join(lines))
    return Keyring.from_toml(str(path))
