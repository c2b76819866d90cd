#!/usr/bin/env bash
# Run the project's pinned AWS SAM CLI (and the cfn-lint it ships with) from .venv-sam.
#
#   tools/sam.sh build                      # any `sam` command and its arguments
#   tools/sam.sh validate --lint
#   tools/sam.sh --cfn-lint template.yaml   # cfn-lint from .venv-sam, same arguments as cfn-lint
#   tools/sam.sh --install                  # only create/refresh .venv-sam, then exit
#   tools/sam.sh --python312                # print the python3.12 that `sam build` will use
#
# aws-sam-cli pins its own boto3, click and pydantic, so it lives in its own virtualenv
# (.venv-sam, gitignored), created here on first use and recreated when the pin changes.
# Environment: AWS_DEFAULT_REGION defaults to us-east-1 (sam validate needs one);
# SAM_CLI_TELEMETRY=0; SAM_PYTHON (default python3, >= 3.10) creates the virtualenv.
# `sam build` for python3.12 needs a python3.12 on PATH: on a pyenv machine whose default is
# another version, the newest installed 3.12.x is added to PYENV_VERSION.
set -euo pipefail

SAM_CLI_VERSION="1.170.0"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-sam"
stamp="$venv/.installed-aws-sam-cli-$SAM_CLI_VERSION"

install_sam() {
    # Concurrent callers (a developer and pytest, say) must not build the venv twice at once.
    exec 9>"$root/.venv-sam.lock"
    if command -v flock >/dev/null 2>&1; then flock 9; fi
    if [[ -f "$stamp" ]]; then return; fi
    local python="${SAM_PYTHON:-python3}"
    echo "tools/sam.sh: installing aws-sam-cli==$SAM_CLI_VERSION into .venv-sam ($python)" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    # Drop only pip's notes about pip.conf index folders that do not exist on this machine.
    {
        "$venv/bin/python" -m pip install --quiet --upgrade pip
        "$venv/bin/python" -m pip install --quiet "aws-sam-cli==$SAM_CLI_VERSION"
    } 2>&1 | { grep -v -F "is ignored: it is neither a file nor a directory" || true; } >&2
    touch "$stamp"
}

find_python312() {
    # The pyenv shim for python3.12 is on PATH even when it cannot run, so try to run it.
    if python3.12 -c "" >/dev/null 2>&1; then return; fi
    if command -v pyenv >/dev/null 2>&1; then
        local py312
        py312="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12\.[0-9]+$' | sort -V | tail -n 1 || true)"
        if [[ -n "$py312" ]]; then
            export PYENV_VERSION="$(pyenv version-name):$py312"
            return
        fi
    fi
    echo "tools/sam.sh: warning: no python3.12 found; 'sam build' will fail" >&2
}

export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export SAM_CLI_TELEMETRY=0
find_python312

if [[ "${1:-}" == "--python312" ]]; then
    python3.12 -c "import sys; print(sys.executable)" 2>/dev/null && exit 0
    echo "tools/sam.sh: no runnable python3.12 (put one on PATH, or install 3.12 with pyenv)" >&2
    exit 1
fi

if [[ ! -f "$stamp" ]]; then install_sam; fi

case "${1:-}" in
    --install) exit 0 ;;
    --cfn-lint) shift; exec "$venv/bin/cfn-lint" "$@" ;;
    *) exec "$venv/bin/sam" "$@" ;;
esac
