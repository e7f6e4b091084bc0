"""What a call to the model can fail with. Every message is safe to log: it names the status,
the kind of failure and the timing, never the prompt, the reply or the server's error text
(which may echo the prompt)."""

from __future__ import annotations


class WriterError(Exception):
    """The model failed or misbehaved; the message is safe to log (no PII, no prompt)."""


class LLMError(WriterError):
    """A call to the model server failed. A `WriterError`, so a writer's caller needs one except."""


class UpstreamError(LLMError):
    """The server answered with an error status or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DeadlineExceeded(LLMError):
    """No complete answer before the request's deadline."""


class CircuitOpen(LLMError):
    """The circuit breaker is open: the call was not attempted."""


class MalformedReply(LLMError):
    """The server's answer is not what was asked for (not JSON, not the schema)."""
