"""Forgetting mitigation: replay of old data, KL to the base model, EWC. Small parts the loop calls."""
