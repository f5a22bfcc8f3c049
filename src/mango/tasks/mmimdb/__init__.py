"""Multi-label classification: the MM-IMDb movie genre task (poster + plot)."""
