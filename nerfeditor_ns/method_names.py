"""Names of this plugin's nerfstudio methods (the presets in :mod:`nerfeditor_ns.method_configs`).

Kept apart from the presets so that ``ns-edit`` can recognise a nerfeditor run's ``config.yml`` without importing
nerfstudio or torch.
"""

NERFEDITOR = "nerfeditor"
"""The full preset (nerfacto-sized, 30,000 steps)."""
NERFEDITOR_TINY = "nerfeditor-tiny"
"""The tiny CPU preset for tests and the demo."""

#: method names of this plugin; a run config naming anything else is not a nerfeditor run
NERFEDITOR_METHODS = (NERFEDITOR, NERFEDITOR_TINY)
