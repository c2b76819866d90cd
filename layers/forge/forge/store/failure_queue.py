"""SQS adapter of the `FailureQueue` port: the archiver's on-failure records, received and
deleted. botocore errors become FailureQueueUnavailable here; nothing above sees boto3."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from forge.domain.archive_replay import QueuedMessage
from forge.domain.errors import FailureQueueUnavailable

_BATCH = 10  # SQS's most per ReceiveMessage and per DeleteMessageBatch


@contextmanager
def _queue_errors(action: str) -> Iterator[None]:
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        message = f"The archive failure queue is unavailable ({action})"
        raise FailureQueueUnavailable(message) from exc


class SqsFailureQueue:
    """The `FailureQueue` port over one SQS client and one queue URL.

    Receiving long-polls (`wait_seconds` >= 1 asks every SQS server, so an empty answer means
    empty) and hides what it received for `visibility_seconds`: long enough to replay it
    before deleting it. Releasing makes a message visible again at once; one neither deleted
    nor released (a run that crashed) comes back when its visibility timeout ends."""

    def __init__(
        self,
        client: Any,
        queue_url: str,
        *,
        wait_seconds: int = 1,
        visibility_seconds: int = 3600,
    ) -> None:
        self._sqs = client
        self._url = queue_url
        self._wait = wait_seconds
        self._visibility = visibility_seconds

    def receive(self) -> list[QueuedMessage]:
        with _queue_errors("receive"):
            got = self._sqs.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=_BATCH,
                WaitTimeSeconds=self._wait,
                VisibilityTimeout=self._visibility,
            )
        return [
            QueuedMessage(str(m["MessageId"]), str(m["ReceiptHandle"]), str(m.get("Body", "")))
            for m in got.get("Messages", [])
        ]

    def delete(self, messages: Sequence[QueuedMessage]) -> None:
        for chunk in _chunks(messages):
            entries = [{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(chunk)]
            with _queue_errors("delete"):
                got = self._sqs.delete_message_batch(QueueUrl=self._url, Entries=entries)
            _check(chunk, got, "delete")

    def release(self, messages: Sequence[QueuedMessage]) -> None:
        for chunk in _chunks(messages):
            entries = [
                {"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": 0}
                for i, m in enumerate(chunk)
            ]
            with _queue_errors("release"):
                got = self._sqs.change_message_visibility_batch(QueueUrl=self._url, Entries=entries)
            _check(chunk, got, "release")


def _chunks(messages: Sequence[QueuedMessage]) -> Iterator[Sequence[QueuedMessage]]:
    for start in range(0, len(messages), _BATCH):
        yield messages[start : start + _BATCH]


def _check(chunk: Sequence[QueuedMessage], answer: dict[str, Any], action: str) -> None:
    """A batch call answers 200 with per-message failures: any is an error."""
    if failed := answer.get("Failed"):
        ids = ", ".join(chunk[int(f["Id"])].message_id for f in failed)
        raise FailureQueueUnavailable(f"Could not {action} queued messages: {ids}")
