"""difftransforms.wavelets (under construction)."""
