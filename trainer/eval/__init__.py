"""Evaluation and prediction: ``evaluate`` (the command), ``scoring`` (the baselines over a split),
``model_eval`` (the model's per-field NLL and RTT prediction), ``predict`` (queries),
``sampling`` (grammar-constrained sampling with a KV cache), ``baselines`` (median, last-value and context
baselines, metrics), ``coordinates`` (matrix factorisation and Vivaldi), ``columns`` (records to measurement
columns, vectorized), ``fitting`` (the train split fitted in buckets, memory bounded), ``tune`` (their
settings on a validation split), ``context_probe`` (does the model copy the pair's earlier RTT?)."""
