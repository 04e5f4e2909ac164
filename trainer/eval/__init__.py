"""Evaluation and prediction: ``evaluate`` (scores against baselines), ``predict`` (queries),
``sampling`` (grammar-constrained sampling with a KV cache), ``baselines`` (the reference predictors)."""
