"""The evaluation harness behind `memalpha eval`: methods, baselines, runs and reports."""
