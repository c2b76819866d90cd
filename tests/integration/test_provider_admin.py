"""`forge-admin providers set/unset/list` against the emulator's Secrets Manager, in process:
the secret's JSON after each command, keys read from stdin, a prompt or a variable (never
argv), names validated, and no key ever printed."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from forge_tools import admin
from forge_tools.emulator import Emulator, Resources
from tests.conftest import clear_cached_factories

OPENAI_KEY = "sk-cli-openai-5f3a9c1e"
ANTHROPIC_KEY = "sk-ant-cli-77d0b2"


@pytest.fixture
def secret_id(
    aws_stack: Resources, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The stack's provider secret as the template creates it: an empty JSON object."""
    name = f"{aws_stack.tables['BudgetTable']}/providers"
    emulator.client("secretsmanager").create_secret(Name=name, SecretString="{}")
    monkeypatch.setenv("FORGE_PROVIDER_SECRET_ID", name)
    monkeypatch.delenv("FORGE_COMPAT_PROVIDERS", raising=False)
    yield name


def stored(emulator: Emulator, secret_id: str) -> Any:
    answer = emulator.client("secretsmanager").get_secret_value(SecretId=secret_id)
    return json.loads(answer["SecretString"])


def forge_admin(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    stdin: str = "",
) -> tuple[Any, str]:
    """Run forge-admin with `stdin` piped in; its JSON output and what it said on stderr."""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    admin.main(list(args))
    said = capsys.readouterr()
    return json.loads(said.out), said.err


def listed(shown: list[dict[str, Any]]) -> dict[str, str]:
    return {row["provider"]: row["key"] for row in shown}


def test_set_list_unset_round_trip_through_the_secret(
    secret_id: str,
    emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    printed: list[str] = []

    # Given the empty placeholder, list shows every known provider without a key
    shown, err = forge_admin(capsys, monkeypatch, "providers", "list")
    assert listed(shown) == {"openai": "not set", "anthropic": "not set", "gemini": "not set"}

    # When the OpenAI key is piped in (with the newline `echo` adds)
    shown, err = forge_admin(
        capsys, monkeypatch, "providers", "set", "openai", stdin=OPENAI_KEY + "\n"
    )
    printed += [json.dumps(shown), err]
    # Then the secret holds it, the rest of the object untouched, and only names are shown
    assert stored(emulator, secret_id) == {"openai": OPENAI_KEY}
    assert listed(shown)["openai"] == "set"
    assert "openai: key set" in err and "60 s" in err

    # When Anthropic's comes from a variable, the OpenAI key stays
    monkeypatch.setenv("ANTHROPIC_KEY_FOR_FORGE", ANTHROPIC_KEY)
    shown, err = forge_admin(
        capsys,
        monkeypatch,
        "providers",
        "set",
        "anthropic",
        "--from-env",
        "ANTHROPIC_KEY_FOR_FORGE",
    )
    printed += [json.dumps(shown), err]
    assert stored(emulator, secret_id) == {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY}

    shown, err = forge_admin(capsys, monkeypatch, "providers", "list")
    printed += [json.dumps(shown), err]
    assert listed(shown) == {"openai": "set", "anthropic": "set", "gemini": "not set"}

    # When OpenAI's is unset, only it goes
    shown, err = forge_admin(capsys, monkeypatch, "providers", "unset", "openai")
    printed += [json.dumps(shown), err]
    assert stored(emulator, secret_id) == {"anthropic": ANTHROPIC_KEY}
    assert listed(shown)["openai"] == "not set" and "openai: key removed" in err
    # and unsetting it again changes nothing and says so
    shown, err = forge_admin(capsys, monkeypatch, "providers", "unset", "openai")
    assert "had no key" in err and stored(emulator, secret_id) == {"anthropic": ANTHROPIC_KEY}

    everything = "\n".join(printed)
    assert OPENAI_KEY not in everything and ANTHROPIC_KEY not in everything


def test_a_terminal_gets_a_hidden_prompt(
    secret_id: str,
    emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prompts: list[str] = []

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def hidden(prompt: str) -> str:
        prompts.append(prompt)
        return OPENAI_KEY

    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", hidden)
    admin.main(["providers", "set", "gemini"])

    assert prompts == ["API key for gemini (not echoed): "]
    assert stored(emulator, secret_id) == {"gemini": OPENAI_KEY}
    said = capsys.readouterr()
    assert OPENAI_KEY not in said.out + said.err


@pytest.mark.parametrize(
    ("args", "stdin", "says"),
    [
        (["set", "opena1"], OPENAI_KEY, "Unknown provider 'opena1'"),
        (["set", "deepseek"], OPENAI_KEY, "FORGE_COMPAT_PROVIDERS"),
        (["unset", "nobody"], "", "Unknown provider 'nobody'"),
        (["set", "openai"], "\n", "No key given for openai"),
        (["set", "openai"], f"{OPENAI_KEY}\n{OPENAI_KEY}\n", "one token"),
        (["set", "openai", "--from-env", "NO_SUCH_VARIABLE_HERE"], "", "NO_SUCH_VARIABLE_HERE"),
    ],
)
def test_a_refused_command_changes_nothing_and_never_echoes_the_input(
    secret_id: str,
    emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    stdin: str,
    says: str,
) -> None:
    monkeypatch.delenv("NO_SUCH_VARIABLE_HERE", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    with pytest.raises(SystemExit) as exited:
        admin.main(["providers", *args])
    assert exited.value.code == 1
    said = capsys.readouterr()
    assert says in said.err and said.out == ""
    assert OPENAI_KEY not in said.err
    assert stored(emulator, secret_id) == {}


def test_a_compat_provider_named_in_the_settings_can_be_keyed(
    secret_id: str,
    emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FORGE_COMPAT_PROVIDERS", '{"deepseek": "https://api.deepseek.com/v1"}')
    shown, _ = forge_admin(capsys, monkeypatch, "providers", "set", "deepseek", stdin="sk-ds")
    assert stored(emulator, secret_id) == {"deepseek": "sk-ds"}
    assert listed(shown)["deepseek"] == "set"


def test_without_a_secret_it_says_where_to_find_one(
    aws_stack: Resources,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FORGE_PROVIDER_SECRET_ID", raising=False)
    with pytest.raises(SystemExit) as exited:
        admin.main(["providers", "list"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("forge-admin: no provider secret configured") and "--stack" in err

    # A secret id that names nothing: one line, before any key is asked for
    monkeypatch.setenv("FORGE_PROVIDER_SECRET_ID", "no-such-stack/providers")
    clear_cached_factories()  # a new forge-admin process
    monkeypatch.setattr("sys.stdin", io.StringIO(OPENAI_KEY))
    with pytest.raises(SystemExit) as exited:
        admin.main(["providers", "set", "openai"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "'no-such-stack/providers' does not exist" in err and OPENAI_KEY not in err


def _stack_with_outputs(emulator: Emulator, name: str, outputs: dict[str, str]) -> None:
    template = {
        "Resources": {"Placeholder": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    emulator.client("cloudformation").create_stack(
        StackName=name, TemplateBody=json.dumps(template)
    )


def test_with_stack_the_secret_comes_from_the_provider_secret_arn_output(
    aws_stack: Resources,
    emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a deployed stack whose ProviderSecretArn output names its (empty) secret, and a
    # shell that still has another stack's secret id in its environment
    stack = f"{aws_stack.tables['BudgetTable']}-deployed"
    secrets = emulator.client("secretsmanager")
    arn = secrets.create_secret(Name=f"{stack}/providers-placeholder", SecretString="{}")["ARN"]
    _stack_with_outputs(
        emulator,
        stack,
        {
            "BudgetTableName": aws_stack.tables["BudgetTable"],
            "LedgerTableName": aws_stack.tables["LedgerTable"],
            "ArchiveBucketName": aws_stack.buckets["ArchiveBucket"],
            "ProviderSecretArn": arn,
        },
    )
    monkeypatch.setenv("FORGE_PROVIDER_SECRET_ID", "forge-local/providers")

    # When a key is set with --stack
    forge_admin(capsys, monkeypatch, "--stack", stack, "providers", "set", "openai", stdin="sk-s")

    # Then it lands in the secret the output names
    assert json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"]) == {"openai": "sk-s"}

    # And a stack deployed before the output existed falls back to the template's name
    clear_cached_factories()  # a new forge-admin process
    older = f"{aws_stack.tables['BudgetTable']}-older"
    secrets.create_secret(Name=f"{older}/providers", SecretString="{}")
    _stack_with_outputs(emulator, older, {"BudgetTableName": aws_stack.tables["BudgetTable"]})
    forge_admin(capsys, monkeypatch, "--stack", older, "providers", "set", "gemini", stdin="g-1")
    assert stored(emulator, f"{older}/providers") == {"gemini": "g-1"}
