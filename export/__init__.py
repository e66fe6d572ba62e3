"""edgevlm.export: one exporter per target plus the shared static-graph wrappers
(installed as ``edgevlm.export``)."""
