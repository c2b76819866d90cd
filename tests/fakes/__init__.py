"""Fake providers on 127.0.0.1 that speak OpenAI's, Anthropic's and Gemini's wire formats."""

from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.base import FakeProvider, Fault
from tests.fakes.gemini_fake import FakeGemini
from tests.fakes.openai_fake import FakeOpenAI

__all__ = ["FakeAnthropic", "FakeGemini", "FakeOpenAI", "FakeProvider", "Fault"]
