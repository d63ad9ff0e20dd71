"""Serving: the SavedModel signatures (encode, sample, ...) and versioned, atomic exports for
TF Serving."""
