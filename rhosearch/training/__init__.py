"""How one network is trained: recipes, data sets, checkpoints and the training loop."""
