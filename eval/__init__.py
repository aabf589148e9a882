"""Evaluation: WER, the latency report, benchmarks."""
import pipeline  # noqa: F401,E402 - its thread settings, before numpy loads
