"""Training and export of the models (torch only; the runtime never imports this package)."""
