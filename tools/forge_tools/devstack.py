"""`make dev`: the whole stack on 127.0.0.1 with no cloud account.

The embedded emulator (DynamoDB + S3, from template.yaml), the demo provider, the ledger
stream feeding the archiver's handler, and the gateway under uvicorn. A demo account, an
inference key and the account's management key are seeded and written to .local/dev.env (for
any OpenAI client, the console and forge-admin), with the console's URL.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shlex
import socket
import sys
import threading
import time
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from forge_tools.emulator import REGION, Emulator, Resources
from forge_tools.lambda_local import ROOT, load_handler_module
from forge_tools.streams import StreamPoller

TEMPLATE = ROOT / "template.yaml"
LOCAL_STACK = "forge-local"  # the local stack's name: prefixes its tables, bucket and secret
# Signs local payment webhooks (see README "Money in"); a deployed stack sets its own secret.
LOCAL_WEBHOOK_SECRET = "whsec_local_tokens_forge"  # noqa: S105 - a fixed local-only value
logger = logging.getLogger("forge.dev")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server(uvicorn.Server):
    """uvicorn in a thread: signal handling belongs to the main server only."""

    def install_signal_handlers(self) -> None:
        pass


def _serve_in_thread(app: ASGIApp, port: int) -> uvicorn.Server:
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server


def _seed(resources: Resources) -> dict[str, str]:
    """The demo account with money in both buckets, an inference key (OPENAI_API_KEY) and
    the account's management key (FORGE_MANAGEMENT_KEY: the console's sign-in)."""
    from forge.domain.money import Bucket
    from forge.money_in.accounts import create_account_with_owner_key, credit_wallet, issue_key
    from forge.wiring import get_store

    store = get_store()
    account_id, management_key = create_account_with_owner_key(store, "Demo account")
    credit_wallet(store, account_id, Bucket.CREDIT, "10.00", source="seed", memo="demo credit")
    credit_wallet(store, account_id, Bucket.RMB, "50.00", source="seed", memo="demo wallet")
    plaintext, key = issue_key(store, account_id, name="demo")
    _seed_catalog()
    return {
        "FORGE_ACCOUNT_ID": account_id,
        "FORGE_KEY_ID": key.key_id,
        "OPENAI_API_KEY": plaintext,
        "FORGE_MANAGEMENT_KEY": management_key,
    }


def _seed_catalog() -> None:
    """The catalog in the budget table, from FORGE_CATALOG_FILE or the file the package ships
    (`forge-admin catalog ...` changes it while the stack runs)."""
    from forge.domain.catalog import read_catalog_file
    from forge.settings import get_settings
    from forge.store.dynamo.catalog import DynamoCatalogStore
    from forge.wiring import dynamodb_client

    path = os.environ.get("FORGE_CATALOG_FILE")
    catalog = read_catalog_file(Path(path) if path else None)
    DynamoCatalogStore(dynamodb_client(), get_settings().budget_table).seed(catalog)


def _create_provider_secret(emulator: Emulator, prefix: str) -> str:
    """The provider key secret, empty, as the deployed stack creates it: `forge-admin
    providers set NAME` fills it while the stack runs (a key in the environment still wins)."""
    name = f"{prefix}/providers"
    emulator.client("secretsmanager").create_secret(Name=name, SecretString="{}")
    return name


def _listen(port: int) -> socket.socket:
    """The gateway's socket, bound before anything starts: a busy port (another `make dev`
    running) is one line and exit 1, not a stack started for nothing and torn down."""
    sock = socket.socket()
    # As uvicorn binds: a port left in TIME_WAIT by the previous run is free to take.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        reason = (
            f"port {port} is in use (another `make dev`?): stop it or choose another,"
            f" e.g. `make dev PORT={port + 1}`"
            if exc.errno == errno.EADDRINUSE
            else f"cannot listen on 127.0.0.1:{port}: {exc.strerror}"
        )
        print(f"forge-dev: {reason}", file=sys.stderr)
        raise SystemExit(1) from None
    return sock


class EnvFile:
    """.local/dev.env, removed on exit only if it still holds what this process wrote: a
    stack that failed to start wrote nothing, and another `make dev` (on another port) may
    have replaced the file since; either way the file belongs to a stack still running."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._written: str | None = None

    def write(self, values: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"export {k}={shlex.quote(v)}" for k, v in values.items()]
        text = "# Written by `make dev`; valid while it runs.\n" + "\n".join(lines) + "\n"
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o600)
        tmp.replace(self.path)  # atomic: a watcher never reads half a file
        self._written = text

    def remove(self) -> None:
        if self._written is None:
            return
        try:
            if self.path.read_text() == self._written:
                self.path.unlink()
        except FileNotFoundError:
            pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="forge-dev", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("FORGE_LOCAL_DIR", ROOT / ".local"))
    )
    args = parser.parse_args(argv)
    listener = _listen(args.port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the emulator's access log
    logging.getLogger("httpx").setLevel(logging.WARNING)  # upstream URLs may carry keys

    emulator = Emulator().start()
    resources = emulator.create_resources(TEMPLATE, prefix=LOCAL_STACK)
    demo_port = _free_port()
    origin = f"http://127.0.0.1:{listener.getsockname()[1]}"
    base_url = f"{origin}/v1"
    console_url = f"{origin}/console/"
    env = {
        **resources.environment(),
        "FORGE_DEMO_BASE_URL": f"http://127.0.0.1:{demo_port}/v1",
        "FORGE_WEBHOOK_SECRET": os.environ.get("FORGE_WEBHOOK_SECRET") or LOCAL_WEBHOOK_SECRET,
        "FORGE_PROVIDER_SECRET_ID": _create_provider_secret(emulator, LOCAL_STACK),
    }
    os.environ.update(env)  # the process entry point configures the settings of everything below

    from forge.api import create_app
    from forge.providers.demo import create_demo_app

    demo = _serve_in_thread(create_demo_app(), demo_port)
    seeded = _seed(resources)
    archiver = load_handler_module("archiver")
    poller = StreamPoller(
        emulator.client("dynamodb"),
        emulator.client("dynamodbstreams"),
        resources.tables["LedgerTable"],
        archiver.handler,
        region=REGION,
    ).start()

    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=args.port, log_level="info")
    )
    env_file = EnvFile(args.state_dir / "dev.env")

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.02)
        env_file.write(
            {"OPENAI_BASE_URL": base_url, "FORGE_CONSOLE_URL": console_url, **seeded, **env}
        )
        print(
            f"\nTokens Forge is running on {base_url}\n"
            f"  console: {console_url} (sign in with the management key below)\n"
            f"  management key: {seeded['FORGE_MANAGEMENT_KEY']}\n"
            f"  source {env_file.path}\n"
            f'  curl -s $OPENAI_BASE_URL/chat/completions -H "Authorization: Bearer '
            f'$OPENAI_API_KEY" \\\n'
            f"    -H 'Content-Type: application/json' \\\n"
            f'    -d \'{{"model": "demo-official", "messages": '
            f'[{{"role": "user", "content": "Hello"}}]}}\' -i\n'
            f"Ctrl-C stops everything.\n",
            flush=True,
        )

    threading.Thread(target=announce, daemon=True).start()
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:
        pass  # uvicorn has already shut down gracefully; Ctrl-C is the normal way to stop
    finally:
        env_file.remove()
        poller.stop()
        demo.should_exit = True
        emulator.stop()


if __name__ == "__main__":
    main()
