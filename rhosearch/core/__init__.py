"""What a configuration is: the search space (rho), the model it builds, and its cost."""
