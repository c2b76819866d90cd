"""The gateway: authenticate, plan, reserve, call upstream (retrying, falling back), settle."""

from forge.gateway.service import (
    MIN_OUTPUT_TOKENS,
    CallPlan,
    Completed,
    Gateway,
    RequestLimits,
    StreamItem,
    StreamResult,
    estimated_input_tokens,
    receipt_summary,
    worst_case_input_tokens,
)

__all__ = [
    "MIN_OUTPUT_TOKENS",
    "CallPlan",
    "Completed",
    "Gateway",
    "RequestLimits",
    "StreamItem",
    "StreamResult",
    "estimated_input_tokens",
    "receipt_summary",
    "worst_case_input_tokens",
]
