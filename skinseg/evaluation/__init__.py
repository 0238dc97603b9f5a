"""Scoring trained runs on their test split (the only place the test set is touched), and the
comparison table of several runs."""
