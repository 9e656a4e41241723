"""The deployed side: featurizer, action schemes, bundle format, numpy policy, the callback.

Nothing in this package imports torch or stable-baselines3.
"""
