"""Training and export of the models (torch only, but for the data readers ``labelled``,
``coco``, ``datasets`` and ``errors``, which ``perception eval --data`` uses too; the runtime node
never imports this package).

Layer 8: imports any runtime folder, never ``cli`` or ``fleet``."""
