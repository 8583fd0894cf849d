"""Compatibility alias: the old import path of :class:`~latlab.training.mlflow_pyfunc.BundleModel`.

Models logged before the module was renamed to :mod:`latlab.training.mlflow_pyfunc` carry a
copy of their entry file that runs ``from latlab.training.pyfunc import BundleModel``; when
such a model is loaded in a process where latlab is already imported (``mlflow.pyfunc.
load_model``), that import resolves here. Nothing else should import this module.
"""

from latlab.training.mlflow_pyfunc import BundleModel

__all__ = ["BundleModel"]
