"""Slide -> tiles -> batches -> backbone -> heads, on worker threads, resumable."""
