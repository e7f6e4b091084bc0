"""The client for OpenAI-compatible model servers, shared by the graphs."""
