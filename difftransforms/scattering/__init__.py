"""difftransforms.scattering (under construction)."""
