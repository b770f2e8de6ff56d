"""difftransforms.ops (under construction)."""
