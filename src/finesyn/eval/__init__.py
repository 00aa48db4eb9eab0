"""Evaluation of frozen features: retrieval (Rank-k, mAP), weighted kNN, linear probes."""
