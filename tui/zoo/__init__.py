"""The seed zoo: catalog, prompt formats and Hub downloads (no Textual here)."""
