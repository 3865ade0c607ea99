"""The built-in profiles (smoke, cpu, full, check): TOML files shipped as package data, read by harness.config."""
