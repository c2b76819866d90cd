"""Operator and developer tools: the admin CLI and the embedded local stack (not on Lambda)."""
