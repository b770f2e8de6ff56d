"""difftransforms.features (under construction)."""
