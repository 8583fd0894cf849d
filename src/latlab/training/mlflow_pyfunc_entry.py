"""MLflow "model from code" entry point of a latlab bundle (:mod:`latlab.training.mlflow_pyfunc`).

MLflow runs this file when it loads the model; it must not be imported otherwise.
"""

from mlflow.models import set_model

from latlab.training.mlflow_pyfunc import BundleModel

set_model(BundleModel())
