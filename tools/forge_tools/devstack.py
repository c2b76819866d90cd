"""`make dev`: the whole stack on 127.0.0.1 with no cloud account.

The embedded emulator (DynamoDB + S3, from template.yaml), the demo provider, the ledger
stream feeding the archiver's handler, and the gateway under uvicorn. A demo account and key
are seeded and written to .local/dev.env for any OpenAI client and for forge-admin.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import socket
import threading
import time
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from forge_tools.emulator import REGION, Emulator, Resources
from forge_tools.lambda_local import ROOT, load_handler_module
from forge_tools.streams import StreamPoller

TEMPLATE = ROOT / "template.yaml"
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
    from forge.accounts import create_account, credit_wallet, issue_key
    from forge.money import Bucket
    from forge.stores import get_store

    store = get_store()
    account_id = create_account(store, "Demo account")
    credit_wallet(store, account_id, Bucket.CREDIT, "10.00", source="seed", memo="demo credit")
    credit_wallet(store, account_id, Bucket.RMB, "50.00", source="seed", memo="demo wallet")
    plaintext, key = issue_key(store, account_id)
    _seed_catalog()
    return {"FORGE_ACCOUNT_ID": account_id, "FORGE_KEY_ID": key.key_id, "OPENAI_API_KEY": plaintext}


def _seed_catalog() -> None:
    """The catalog in the budget table, from FORGE_CATALOG_FILE or the file the package ships
    (`forge-admin catalog ...` changes it while the stack runs)."""
    from forge.adapters.aws import dynamodb_client
    from forge.adapters.catalog_store import DynamoCatalogStore
    from forge.catalog import read_catalog_file
    from forge.settings import get_settings

    path = os.environ.get("FORGE_CATALOG_FILE")
    catalog = read_catalog_file(Path(path) if path else None)
    DynamoCatalogStore(dynamodb_client(), get_settings().budget_table).seed(catalog)


def _write_env(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"export {k}={shlex.quote(v)}" for k, v in values.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("# Written by `make dev`; valid while it runs.\n" + "\n".join(lines) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)  # atomic: a watcher never reads half a file


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="forge-dev", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("FORGE_LOCAL_DIR", ROOT / ".local"))
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the emulator's access log
    logging.getLogger("httpx").setLevel(logging.WARNING)  # upstream URLs may carry keys

    emulator = Emulator().start()
    resources = emulator.create_resources(TEMPLATE)
    demo_port = _free_port()
    base_url = f"http://127.0.0.1:{args.port}/v1"
    env = {
        **resources.environment(),
        "FORGE_DEMO_BASE_URL": f"http://127.0.0.1:{demo_port}/v1",
        "FORGE_WEBHOOK_SECRET": os.environ.get("FORGE_WEBHOOK_SECRET") or LOCAL_WEBHOOK_SECRET,
    }
    os.environ.update(env)  # the process entry point configures the settings of everything below

    from forge.api import create_app
    from forge.demo_upstream import create_demo_app

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
    env_file = args.state_dir / "dev.env"

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.02)
        _write_env(env_file, {"OPENAI_BASE_URL": base_url, **seeded, **env})
        print(
            f"\nTokens Forge is running on {base_url}\n"
            f"  source {env_file}\n"
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
        server.run()
    except KeyboardInterrupt:
        pass  # uvicorn has already shut down gracefully; Ctrl-C is the normal way to stop
    finally:
        env_file.unlink(missing_ok=True)
        poller.stop()
        demo.should_exit = True
        emulator.stop()


if __name__ == "__main__":
    main()
