"""Immutable results objects, their summaries, and saved-model files."""
