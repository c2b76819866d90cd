"""Which providers a container offers, kept in step with the provider key secret: those keyed
in its environment (and the demo) always, those keyed only in the secret while the secret holds
their key, as last read. The secret is re-read at most every `refresh_seconds`: no Secrets
Manager call per request, no rebuilt gateway, and a key an operator sets after deploying is
offered by running containers within that interval. Key values are never logged."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping

from forge.domain.upstream import ChatProvider

logger = logging.getLogger(__name__)

KeyReader = Callable[[], Mapping[str, str]]


class SecretKeys:
    """The provider secret's keys as this container last read them. A read that fails keeps
    the keys read before (a Secrets Manager outage withdraws nothing by itself), and before
    any good read there are none. Either way the next read waits for the interval."""

    def __init__(
        self,
        read: KeyReader,
        *,
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._interval = refresh_seconds
        self._clock = clock
        self._keys: dict[str, str] = {}
        self._read_at: float | None = None
        self._lock = threading.Lock()

    @property
    def fresh(self) -> bool:
        return self._read_at is not None and self._clock() - self._read_at < self._interval

    def refresh(self) -> None:
        """Re-read the secret unless it was read within the interval. Blocking: call it off
        the event loop. Concurrent callers wait for one read rather than each making one."""
        with self._lock:
            if self.fresh:
                return
            try:
                keys = {str(name): key for name, key in self._read().items() if key}
            except Exception as exc:  # never log the error's text: a parser may quote the value
                logger.warning("provider_secret_unreadable", extra={"error": type(exc).__name__})
            else:
                self._keys = keys
            self._read_at = self._clock()

    def get(self, name: str) -> str | None:
        """The key for `name` as last read (no read here: this runs per upstream call)."""
        return self._keys.get(name)


class ProviderOffer(Mapping[str, ChatProvider]):
    """The providers offered now, as a live mapping the gateway holds for its lifetime.

    Iterating and `in` follow the secret. Looking a provider up finds any provider of this
    deployment, offered or not: a call planned just before its key was unset then fails on
    that route as `provider_key_missing` (a fallback, or upstream_unavailable), not as an
    internal error."""

    def __init__(
        self,
        fixed: Mapping[str, ChatProvider],
        keyed: Mapping[str, ChatProvider] | None = None,
        keys: SecretKeys | None = None,
    ) -> None:
        self._fixed = dict(fixed)
        self._keyed = {n: p for n, p in (keyed or {}).items() if n not in self._fixed}
        self._keys = keys

    @property
    def fresh(self) -> bool:
        """False when the secret is due a re-read (then call `refresh`, off the event loop)."""
        return self._keys is None or self._keys.fresh

    def refresh(self) -> None:
        if self._keys is not None:
            self._keys.refresh()

    def _offered(self) -> list[str]:
        keys = self._keys
        if keys is None:
            return list(self._fixed)
        return [*self._fixed, *(name for name in self._keyed if keys.get(name))]

    def __contains__(self, name: object) -> bool:
        return name in self._offered()

    def __getitem__(self, name: str) -> ChatProvider:
        if name in self._fixed:
            return self._fixed[name]
        return self._keyed[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._offered())

    def __len__(self) -> int:
        return len(self._offered())
