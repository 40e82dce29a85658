"""The inference service: loads a model bundle, answers /recommendations and the SageMaker hosting
contract. Never imports Spark: the bundle is the only thing serving knows about training."""
