"""Rollout generation backends: PolicyBackend implementations that also record what GRPO trains on."""
