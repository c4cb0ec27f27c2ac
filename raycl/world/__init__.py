"""The embedded offline world: synthetic text, a local tokenizer, and its continual stream."""
