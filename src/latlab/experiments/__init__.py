"""latlab.experiments."""
