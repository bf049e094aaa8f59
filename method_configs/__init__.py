"""nerfstudio method presets for nerfeditor-ns (placeholder until the model lands)."""
