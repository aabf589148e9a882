"""Stage backends, one module each. See pipeline.registry."""
import pipeline  # noqa: F401,E402 - its thread settings, before numpy loads
