"""ANNETTE's layer-wise predictors: per-layer-type models and a mapping (fusion) model.

Importing the package registers ``roofline``, ``refined``, ``statistical``, ``mixed`` and
``lut`` (:mod:`.predictor`); :mod:`.models` holds the layer models, :mod:`.mapping` the
decision trees predicting fusion.
"""

from latlab.predictors.layerwise.mapping import MappingModel, labelled_pairs, mapping_scores
from latlab.predictors.layerwise.predictor import (
    LAYER_COLUMNS,
    LayerwisePredictor,
    LutPredictor,
    MixedPredictor,
    RefinedRooflinePredictor,
    RooflinePredictor,
    StatisticalPredictor,
)

__all__ = [
    "LAYER_COLUMNS",
    "LayerwisePredictor",
    "LutPredictor",
    "MappingModel",
    "MixedPredictor",
    "RefinedRooflinePredictor",
    "RooflinePredictor",
    "StatisticalPredictor",
    "labelled_pairs",
    "mapping_scores",
]
