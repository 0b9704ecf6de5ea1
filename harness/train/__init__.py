"""Training: the shared loop, big_vision's optimiser chain, fine-tuning helpers, pretraining."""
