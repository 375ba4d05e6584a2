"""NeuralHash hashing: the seed projection (and, later, image hashing)."""
