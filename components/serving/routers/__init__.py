"""One router per resource: recommendations, the SageMaker hosting contract, health, metrics, admin."""
