"""The provider key secret: one Secrets Manager secret holding a JSON object of provider name
to API key ({"openai": "sk-...", "anthropic": "...", ...}). The proxy reads it (see
forge.domain.offer); `forge-admin providers` rewrites it. AWS errors become
ProviderSecretUnavailable here, naming the secret and the error code, never a value."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from forge.domain.errors import ProviderSecretUnavailable


def parse_provider_keys(text: str, secret_id: str) -> dict[str, str]:
    """The secret's JSON object of name -> key; empty keys count as unset."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None  # the parser's message may quote the value: say nothing of it
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ProviderSecretUnavailable(
            f"The provider secret {secret_id!r} is not a JSON object of provider name to key"
        )
    return {str(name): key for name, key in data.items() if key}


class ProviderSecret:
    """One deployment's provider key secret, through a Secrets Manager client."""

    def __init__(self, client: Any, secret_id: str) -> None:
        self._client = client
        self.secret_id = secret_id

    def read(self) -> dict[str, str]:
        try:
            answer = self._client.get_secret_value(SecretId=self.secret_id)
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable("read", exc) from None
        text = answer.get("SecretString")
        if text is None:
            text = bytes(answer.get("SecretBinary") or b"").decode("utf-8", errors="replace")
        return parse_provider_keys(text, self.secret_id)

    def write(self, keys: Mapping[str, str]) -> None:
        """Replace the whole object (a new version of the secret; the old one is kept as
        AWSPREVIOUS by Secrets Manager)."""
        text = json.dumps(dict(sorted(keys.items())))
        try:
            self._client.put_secret_value(SecretId=self.secret_id, SecretString=text)
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable("write", exc) from None

    def _unavailable(self, verb: str, exc: Exception) -> ProviderSecretUnavailable:
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code") or "ClientError")
        else:
            code = type(exc).__name__
        if code == "ResourceNotFoundException":
            return ProviderSecretUnavailable(
                f"The provider secret {self.secret_id!r} does not exist (the stack creates it"
                " as '{}'; locally `make dev` does)"
            )
        return ProviderSecretUnavailable(
            f"Cannot {verb} the provider secret {self.secret_id!r} ({code})"
        )
