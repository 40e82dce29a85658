"""The step graph as a SageMaker Pipeline (SDK v3), its runner, and the built-in CatBoost URIs.

Nothing here imports the SageMaker SDK at import time: the SDK is an optional extra (``sagemaker``) and
parts of it create AWS clients when imported, so each function imports what it needs when called.
"""
