"""Progression patterns: organ progression sequences encoded, clustered (k-means), named, and predicted.

``cluster_sequences(sequences, patients)`` -> :class:`ProgressionPatterns`;
``baseline_features(cohort)`` + ``train_group_predictor(features, groups)`` -> :class:`GroupPredictor`.
"""
from __future__ import annotations

from .cluster import (
    ProgressionPatterns,
    choose_k,
    cluster_sequences,
    kmeans_information_criteria,
    knee_point,
    subcluster_group,
)
from .encode import PositionOneHot, RankEncoding, SequenceEncoding, encode_sequences, order_sequences
from .naming import describe_clusters, name_clusters
from .predict import GroupPredictor, baseline_features, train_group_predictor

__all__ = [
    "GroupPredictor",
    "PositionOneHot",
    "ProgressionPatterns",
    "RankEncoding",
    "SequenceEncoding",
    "choose_k",
    "cluster_sequences",
    "describe_clusters",
    "baseline_features",
    "encode_sequences",
    "kmeans_information_criteria",
    "knee_point",
    "name_clusters",
    "order_sequences",
    "subcluster_group",
    "train_group_predictor",
]
