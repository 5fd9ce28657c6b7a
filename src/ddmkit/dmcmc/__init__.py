"""Denoising MCMC (Kim & Ye, ICML 2023): the noise-level classifier and the Denoising Langevin Gibbs
sampler (spec: shared/specs/dmcmc.md).

    from ddmkit.dmcmc import load_classifier, DLGConfig, dlg_sample
"""
from .classifier import (
    ClassifierTrainConfig,
    NoiseLevelClassifier,
    NoiseLevelNet,
    check_compatible,
    evaluate_classifier,
    load_classifier,
    save_classifier,
    train_noise_classifier,
)
