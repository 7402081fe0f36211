"""The model layer: which models are offered (catalog), a model client per run (provider), offline token counts."""
