"""`forge-admin providers ...`: the provider API keys in the deployment's provider secret
(FORGE_PROVIDER_SECRET_ID; with --stack, the stack's ProviderSecretArn output). A key is read
from stdin, a hidden prompt or --from-env VAR, never from the command line (it would land in
shell history), and never printed: `list` shows names only. Running containers offer a
provider within FORGE_PROVIDER_REFRESH_SECONDS (60 s) of its key being set, and stop offering
it as soon after it is unset; no redeploy."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Any, NoReturn

from forge.domain.errors import InvalidRequest


def add_parser(groups: Any) -> None:
    providers = groups.add_parser(
        "providers", help="provider API keys (names only are ever shown)"
    ).add_subparsers(dest="action", required=True)
    providers.add_parser("list", help="which providers have a key (names only, never a value)")
    set_key = providers.add_parser(
        "set", help="set a provider's key, read from stdin or a hidden prompt (never argv)"
    )
    set_key.add_argument("name", help="openai, anthropic, gemini or a FORGE_COMPAT_PROVIDERS name")
    set_key.add_argument("--from-env", metavar="VAR", help="read the key from this variable")
    unset_key = providers.add_parser("unset", help="remove a provider's key")
    unset_key.add_argument("name")


def _fail(reason: str) -> NoReturn:
    print(f"forge-admin: {reason}", file=sys.stderr)
    raise SystemExit(2)


def _read_key(name: str, from_env: str | None) -> str:
    """The key from the named variable, else a hidden prompt on a terminal, else stdin."""
    if from_env is not None:
        text = os.environ.get(from_env, "")
        if not text.strip():
            raise InvalidRequest(f"The variable {from_env} is unset or empty")
    elif sys.stdin.isatty():
        text = getpass.getpass(f"API key for {name} (not echoed): ")
    else:
        text = sys.stdin.read()
    key = text.strip()
    # Never quote the input in an error: it may be the key itself.
    if not key:
        raise InvalidRequest(f"No key given for {name} (empty input)")
    if any(c.isspace() for c in key):
        raise InvalidRequest(f"A key is one token without spaces or line breaks (for {name})")
    return key


def _listing(known: tuple[str, ...], keys: dict[str, str]) -> list[dict[str, Any]]:
    shown: list[dict[str, Any]] = [
        {"provider": n, "key": "set" if n in keys else "not set"} for n in known
    ]
    shown += [
        {"provider": n, "key": "set", "note": "not a provider this deployment knows: ignored"}
        for n in sorted(keys)
        if n not in known
    ]
    return shown


def run(args: argparse.Namespace) -> None:
    from forge.providers.registry import known_providers
    from forge.settings import get_settings
    from forge.wiring import get_provider_secret

    settings = get_settings()
    secret = get_provider_secret(settings)
    if secret is None:
        _fail(
            "no provider secret configured (FORGE_PROVIDER_SECRET_ID unset): pass --stack NAME,"
            " or run `source .local/dev.env` while `make dev` runs"
        )
    known = known_providers(settings)
    if args.action == "set" and args.name not in known:
        raise InvalidRequest(
            f"Unknown provider '{args.name}': this deployment knows {', '.join(known)}"
            " (an OpenAI-compatible one must first be named in FORGE_COMPAT_PROVIDERS)"
        )
    keys = secret.read()  # before reading the key: a wrong stack fails before the prompt
    match args.action:
        case "set":
            keys[args.name] = _read_key(args.name, args.from_env)
            secret.write(keys)
            said = f"{args.name}: key set"
        case "unset":
            if args.name not in known and args.name not in keys:
                raise InvalidRequest(
                    f"Unknown provider '{args.name}': this deployment knows {', '.join(known)}"
                )
            if keys.pop(args.name, None) is None:
                said = f"{args.name}: had no key; nothing changed"
            else:
                secret.write(keys)
                said = f"{args.name}: key removed"
        case _:
            said = ""
    print(json.dumps(_listing(known, keys), indent=2))
    if said:
        print(
            f"{said} in {secret.secret_id}; running containers follow within"
            " FORGE_PROVIDER_REFRESH_SECONDS (default 60 s)",
            file=sys.stderr,
        )
