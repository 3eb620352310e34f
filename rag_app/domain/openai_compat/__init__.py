"""The OpenAI-compatible endpoint (``/v1/models``, ``/v1/chat/completions``): a robot is the
model and a robot access token is the API key, so any OpenAI client can talk to a robot."""
