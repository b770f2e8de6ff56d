"""difftransforms.synthesis (under construction)."""
