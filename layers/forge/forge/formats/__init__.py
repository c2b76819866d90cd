"""Providers' wire formats translated to and from OpenAI's chat shapes (pure functions)."""
