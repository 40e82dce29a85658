"""Model registry port: a local, file-based registry (the embedded default) and the SageMaker Model
Registry, with the same statuses and approve/reject flow."""
