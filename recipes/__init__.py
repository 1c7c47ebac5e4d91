"""Entry points: ``python -m recipes.<name>`` with Hydra overrides."""
