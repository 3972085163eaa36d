"""Models: the set-transformer denoiser and the conditional multiplicity model."""

from e2econd.model.embeddings import ConditionEmbedding, FourierFeatures, TimeEmbedding
from e2econd.model.multiplicity import MultiplicityModel
from e2econd.model.set_transformer import SetTransformer

__all__ = ["ConditionEmbedding", "FourierFeatures", "MultiplicityModel", "SetTransformer", "TimeEmbedding"]
