"""Language models (transformers) trained and scaled with the lab's tools."""
