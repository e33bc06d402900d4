"""One LightningModule per family; each exposes the same `sample(n, condition=None, **sampler)`."""
from synth.models.autoencoder import AutoencoderModule
from synth.models.base import GenerativeModule
from synth.models.diffusion import DiffusionModule
from synth.models.gan import GANModule

__all__ = ["AutoencoderModule", "DiffusionModule", "GANModule", "GenerativeModule"]
