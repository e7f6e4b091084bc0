"""The copy writer over the LLM client: structured output over the pseudonymized brief."""

from __future__ import annotations

from pydantic import Field

from agents.llm.client import LLMClient
from agents.llm.completion import Message, Usage
from agents.prompts import PROMPTS
from agents.writing.writer import Brief, Draft


class MeteredDraft(Draft):
    """A draft with the token usage of the call that wrote it; `usage` is not part of the copy."""

    usage: Usage = Field(default_factory=Usage, exclude=True)


class OpenAIWriter:
    """The copy writer over an `LLMClient`: structured output (a JSON schema built from `Draft`)
    over the pseudonymized brief. Errors are raised as `WriterError`; the graph falls back to
    the offline writer and says so."""

    name = "openai"

    def __init__(
        self,
        client: LLMClient | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if client is None:
            if not (base_url and model):
                raise ValueError("give an LLMClient, or base_url and model to build one")
            client = LLMClient(base_url=base_url, api_key=api_key, model=model, timeout_s=timeout_s)
        self.client = client
        self.prompt_version = "decide-copy-1"
        self._system = (PROMPTS / f"{self.prompt_version}.md").read_text()

    def write(self, brief: Brief, *, feedback: str | None = None) -> Draft:
        messages: list[Message] = [
            {"role": "system", "content": self._system},
            {"role": "user", "content": brief.model_dump_json()},
        ]
        if feedback:
            messages.append(
                {"role": "user", "content": f"Your last draft was rejected: {feedback}"}
            )
        completion = self.client.complete(messages, response_format=Draft)
        assert isinstance(completion.parsed, Draft)  # validated by `complete`
        return MeteredDraft(**completion.parsed.model_dump(), usage=completion.usage)
