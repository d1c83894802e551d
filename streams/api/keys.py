"""API keys: made here, shown once, kept in the keyring by their SHA-256 only."""

from __future__ import annotations

import os
import secrets

from sendgate.models.events import InvalidEvent, validate
from sendgate.models.sources import Keyring, KeyringError, api_key_digest

from ..config import ConfigError


def add_api_key(path: str, app: str, webhook_url: str | None = None, webhook_secret_env: str | None = None) -> str:
    """Append an `[[api_keys]]` entry for `app` to the keyring at `path` and return the new key
    (the file keeps its digest: whoever loses the key needs a new one). With a webhook, the
    app's later outcomes are POSTed there, signed with the secret in `webhook_secret_env`."""
    try:
        validate({"type": "tick", "app": app}, 0)  # an app id as every event carries it
    except InvalidEvent as exc:
        raise ConfigError(str(exc)) from None
    if not os.path.exists(path):
        raise ConfigError(f"keyring {path} does not exist (`sendgate keyring init {path}` writes one)")
    key = "sg_" + secrets.token_urlsafe(32)
    entry = f'\n[[api_keys]]\napp = {_toml_string(app)}\nsha256 = "{api_key_digest(key)}"\n'
    if webhook_url is not None or webhook_secret_env is not None:
        entry += (
            f"webhook_url = {_toml_string(webhook_url or '')}\n"
            f"webhook_secret_env = {_toml_string(webhook_secret_env or '')}\n"
        )
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(entry)
    try:
        Keyring.from_toml(path)  # the file must still load (a hand-edited one may not have)
    except KeyringError as exc:
        raise ConfigError(f"{exc} (the api key entry was appended; fix the file)") from None
    return key


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
