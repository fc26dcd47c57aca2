"""Training and export of the models (torch only; the runtime never imports this package).

Layer 8: imports any runtime folder, never ``cli`` or ``fleet``."""
