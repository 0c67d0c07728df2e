"""CervixFM engine: slides, models, pipeline, retrieval, annotations. Imports no Qt."""

__version__ = "0.1.0"
