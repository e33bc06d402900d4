"""One LightningModule per family; each exposes the same `sample(n, condition=None, **sampler)`."""
from synth.models.autoencoder import AutoencoderModule
from synth.models.base import GenerativeModule
from synth.models.diffusion import DiffusionModule
from synth.models.gan import GANModule
from synth.models.latent_diffusion import LatentDiffusionModule
from synth.models.stylegan2 import StyleGAN2Module
from synth.models.vqvae import VQVAEModule

__all__ = ["AutoencoderModule", "DiffusionModule", "GANModule", "GenerativeModule", "LatentDiffusionModule", "StyleGAN2Module", "VQVAEModule"]
