"""Denoising MCMC (Kim & Ye, ICML 2023): the noise-level classifier and the Denoising Langevin Gibbs
(DLG) sampler (spec: shared/specs/dmcmc.md, sections 3-6, 10, 11).

Command line:

    ddmkit noise-classifier train --model gmm:mix.json --out runs/mix_clf        # or --model default / digits /
    ddmkit sample --dmcmc --model gmm:mix.json --noise-classifier runs/mix_clf \\  #   a diffusers folder + --data
        --integrator kar1 --steps 4 --n-skip 4 --dlg-eta 0.05 --num 1000 --out runs/dlg
    ddmkit sample --dmcmc --model default --integrator kar2 --steps 20 --n-skip 10   # shipped classifier
    ddmkit tune-dmcmc --model gmm:mix.json --noise-classifier runs/mix_clf --target-nfe 20 --out tune.json

Python:

    from ddmkit.dmcmc import DLGConfig, dlg_sample, load_classifier
    clf = load_classifier("runs/mix_clf")
    res = dlg_sample(denoiser, clf, DLGConfig(integrator="kar1", steps=4, eta=0.05, n_skip=4), num=1000, chains=100)
    res.x, res.chain, res.sigma_star, res.nfe, res.events

Modules: `noise_net` (the classifier's networks: the trained CNN/MLP and the exact mixture posterior),
`noise_classifier` (the classifier object, its files, compatibility checks, the oracle), `classifier_data`
(clean training data, model facts), `classifier_training` (training and held-out evaluation),
`dlg` (the chain, the sampler, NFE accounting, divergence handling, resumable state), `run` (the
file-backed, resumable `sample --dmcmc`), `tune` (the grid search of `tune-dmcmc`), `diagnostics` (ESS per
output, mode switches, sigma*, the integrator from exact samples: what separates DLG's error terms).
"""
from .classifier_training import ClassifierTrainConfig, evaluate_classifier, train_noise_classifier
from .noise_classifier import (
    NoiseLevelClassifier, check_compatible, exact_mixture_classifier, load_classifier, oracle_classifier, save_classifier,
)
from .noise_net import NoiseLevelNet
from .dlg import BurnIn, ChainState, DLGConfig, DLGResult, DLGSampler, dlg_sample, nfe_summary, parse_burn_in

__all__ = [
    "BurnIn", "ChainState", "ClassifierTrainConfig", "DLGConfig", "DLGResult", "DLGSampler", "NoiseLevelClassifier",
    "NoiseLevelNet", "check_compatible", "dlg_sample", "evaluate_classifier", "exact_mixture_classifier",
    "load_classifier", "nfe_summary", "oracle_classifier", "parse_burn_in", "save_classifier", "train_noise_classifier",
]
