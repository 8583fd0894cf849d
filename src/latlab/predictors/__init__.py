"""latlab.predictors."""
