"""The gateway: authenticate, plan, reserve, call upstream (retrying, falling back), settle."""

from forge.gateway.plan import (
    MIN_OUTPUT_TOKENS,
    CallPlan,
    RequestLimits,
    estimated_input_tokens,
    worst_case_input_tokens,
)
from forge.gateway.relay import StreamItem, StreamResult, receipt_summary
from forge.gateway.service import Completed, Gateway, TokenCount

__all__ = [
    "MIN_OUTPUT_TOKENS",
    "CallPlan",
    "Completed",
    "Gateway",
    "RequestLimits",
    "StreamItem",
    "StreamResult",
    "TokenCount",
    "estimated_input_tokens",
    "receipt_summary",
    "worst_case_input_tokens",
]
