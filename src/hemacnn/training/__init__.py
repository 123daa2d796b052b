"""Training: the LightningModule, the trainer and its callbacks, fine-tuning."""
