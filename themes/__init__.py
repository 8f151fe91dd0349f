"""zootui's own themes, as TOML files (one theme per file, named after it)."""
