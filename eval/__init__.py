"""Evaluation: WER, the latency report, benchmarks."""
