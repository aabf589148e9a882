"""Stage backends, one module each. See pipeline.registry."""
