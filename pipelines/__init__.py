"""Wiring: the step graph, the local runner, the SageMaker pipeline definition and the CLI."""
