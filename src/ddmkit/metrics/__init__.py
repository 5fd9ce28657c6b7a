"""Metrics: Frechet distance on features, attribute classifiers, evaluation of sample sets."""
