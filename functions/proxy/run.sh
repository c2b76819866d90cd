#!/bin/bash
# The proxy function's entry point (Handler: run.sh). The Lambda Web Adapter layer runs it
# (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap), waits for the port to open, then relays each API
# Gateway request to uvicorn and streams the answer back as it is written
# (AWS_LWA_INVOKE_MODE=response_stream). The same ASGI server and app factory as `make dev`,
# serving only the paid routes. Module search order as Lambda's: function code, the layer.
set -euo pipefail
task_root="${LAMBDA_TASK_ROOT:-$(cd "$(dirname "$0")" && pwd)}"
export PYTHONPATH="$task_root:/opt/python${PYTHONPATH:+:$PYTHONPATH}"
exec python -m uvicorn forge.api:create_paid_app --factory \
    --host 127.0.0.1 --port "${AWS_LWA_PORT:-${PORT:-8080}}" \
    --lifespan off --no-access-log --log-level warning
