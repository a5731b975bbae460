"""The shipped training settings, one TOML file per task (``default_config_path``)."""
