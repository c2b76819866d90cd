"""The fuzz tier runs against the same emulated store as the integration tests."""

from tests.integration.conftest import aws_stack, emulator  # noqa: F401  (shared fixtures)
