"""OpenAI-compatible speech server (POST /v1/audio/speech) on the runtime."""
