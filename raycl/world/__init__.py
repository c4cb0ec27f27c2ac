"""The embedded offline world: synthetic text, a local tokenizer and a ladder of tiny base models."""
