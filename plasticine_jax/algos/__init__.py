"""Learners on one learner-agnostic core: ``<algo>.make_train(cfg, env_id, ...)`` returns a ``Learner``
(``learner.py``) with pure, vmappable ``init``, ``run_updates`` and ``train(key)``; names in ``registry``."""
