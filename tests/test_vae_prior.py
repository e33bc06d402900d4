"""The autoencoders' latent prior: fitted to the aggregate posterior (Var(mu) + E[sigma^2]) by default, used to
sample, and the set-level sample metric (val/mmd_rbf) they log for the VAE sweep."""
import math

import torch

from synth.runs import load_checkpoint, load_run
from synth.tasks import train


def test_fitted_prior_is_the_aggregate_posterior(train_cfg):
    """One training step over one batch holding the whole training split, learning rate 0: the running moments
    are that batch's, and the weights are the ones that encode it again here."""
    cfg = train_cfg("vae", ["model.optimizer.lr=0", "data.batch_size=64", "callbacks.sample_grid.n=0"], steps=1, n=12)
    assert cfg.model.latent_prior == "fitted", "the VAE samples from the fitted prior by default"
    _, objs = train(cfg)
    model = objs["model"].eval()
    images = objs["datamodule"].images("train")
    assert int(model.latent_updates) == 1
    with torch.no_grad():
        mu, sigma = model.net.encode(images)
    var_mu, post_var = mu.var(0, unbiased=False), sigma.pow(2).mean(0)
    assert post_var.mean() > var_mu.mean(), "at initialisation the posterior variance dominates: leaving it out matters"
    torch.testing.assert_close(model.latent_mean, mu.mean(0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.latent_std, (var_mu + post_var).sqrt(), atol=1e-5, rtol=1e-4)
    # sampling decodes draws from N(latent_mean, latent_std^2)
    z = model.prior_latents(4000, generator=torch.Generator().manual_seed(0))
    assert (z.std(0) / model.latent_std - 1).abs().max() < 0.1 and (z.mean(0) - model.latent_mean).abs().max() < 0.1 * model.latent_std.max()
    eps = torch.randn((3, *model.latent_shape), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model.net.decode(model.latent_mean + model.latent_std * eps).clamp(-1, 1)
    torch.testing.assert_close(model.sample(3, generator=torch.Generator().manual_seed(5)), expected)


def test_autoencoders_log_the_set_level_sample_metric(train_cfg):
    cfg = train_cfg("ae", steps=2, n=30)
    metrics, objs = train(cfg)
    assert math.isfinite(metrics["val/mmd_rbf"]) and metrics["val/mmd_rbf"] > 0, "an untrained decoder is far from the images"
    assert "val/mmd" in metrics and "val/l1" in metrics
    assert torch.equal(objs["model"].latent_post_var, torch.zeros_like(objs["model"].latent_post_var)), "the AE's latents carry no noise"


def test_checkpoint_from_before_the_posterior_variance_loads(train_cfg):
    cfg = train_cfg("ae", ["callbacks.sample_grid.n=0"], steps=1, n=8)
    _, objs = train(cfg)
    run = objs["run_dir"]
    path = run / "checkpoints" / "last.ckpt"
    state = load_checkpoint(path)
    del state["state_dict"]["latent_post_var"]  # as written before this buffer existed
    torch.save(state, path)
    model, _ = load_run(run, "last")
    assert torch.equal(model.latent_std, objs["model"].latent_std)
