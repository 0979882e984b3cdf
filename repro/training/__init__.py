"""Training experiments: the degradation study, the identity test, fine-tuning (seed sections 2.1, 6.1)."""
