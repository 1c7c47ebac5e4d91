"""Test helpers: config composition, skips with reasons, tiny models."""
