"""difftransforms.fourier (under construction)."""
