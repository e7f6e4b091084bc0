"""The chat journey: a conversation with the agent, streamed, with memory per thread."""
