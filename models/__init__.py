"""Reducible architectures as specs, their builders, the reducers, costs and export."""

DEFAULT_MODEL = "resnetv2_50"  # the paper's ResNet50 V2, what `nar train`, `nar reduce` and a study start from
