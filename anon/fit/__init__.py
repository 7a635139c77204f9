"""The one LightningModule (a batch of latent codes optimised in ``predict_step``) and its callbacks."""
