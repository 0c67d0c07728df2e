"""Paths for tests that need repository files."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
