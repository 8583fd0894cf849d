"""latlab.training."""
