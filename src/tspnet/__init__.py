"""TSPNet as a DVC pipeline: one module per concern (README.md, "The pipeline"); stages/ calls them."""
