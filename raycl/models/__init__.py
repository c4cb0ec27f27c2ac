"""Base models: the offline ladder of tiny Llama models (pretrained locally on first use), local
directories and hub ids, and the held-out loss every metric is measured with."""
