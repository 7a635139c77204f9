"""Data: image folders, initial latent codes, and the LightningDataModule that shards them."""
