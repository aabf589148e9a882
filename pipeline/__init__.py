"""Cascade: a low-latency cascaded voice assistant (VAD -> ASR -> LLM -> TTS)."""
