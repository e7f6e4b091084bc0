"""The OpenAI-compatible writer: any server that speaks the chat completions API.

It asks for structured output (a JSON schema built from `Draft`) over the pseudonymized brief.
Errors are raised as `WriterError`; the graph falls back to the offline writer and says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import openai
from pydantic import ValidationError

from agents.writer import Brief, Draft

PROMPTS = Path(__file__).parent / "prompts"


class WriterError(Exception):
    """The model failed or misbehaved; the message is safe to log (no PII, no prompt)."""


class OpenAIWriter:
    name = "openai"

    def __init__(self, *, base_url: str, api_key: str | None, model: str, timeout_s: float) -> None:
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_s, max_retries=1
        )
        self._model = model
        self.prompt_version = "decide-copy-1"
        self._system = (PROMPTS / f"{self.prompt_version}.md").read_text()

    def write(self, brief: Brief, *, feedback: str | None = None) -> Draft:
        messages = [
            {"role": "system", "content": self._system},
            {"role": "user", "content": brief.model_dump_json()},
        ]
        if feedback:
            messages.append(
                {"role": "user", "content": f"Your last draft was rejected: {feedback}"}
            )
        try:
            response = self._client.chat.completions.create(
                model=self._model,
                messages=messages,  # type: ignore[arg-type]
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "draft", "schema": Draft.model_json_schema()},
                },
            )
        except openai.OpenAIError as error:
            raise WriterError(f"{type(error).__name__} from the model server") from error
        content = response.choices[0].message.content if response.choices else None
        if not content:
            raise WriterError("the model returned no content")
        try:
            return Draft.model_validate(json.loads(content))
        except (json.JSONDecodeError, ValidationError) as error:
            raise WriterError("the model's reply is not a valid draft") from error
