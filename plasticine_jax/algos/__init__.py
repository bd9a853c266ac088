"""Learners: ``make_train(cfg) -> Trainer`` with a pure, vmappable ``train(key)``."""
