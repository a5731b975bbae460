"""Shipped per-task training configs (TOML), installed as the package ``training.configs``."""
