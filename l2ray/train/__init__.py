"""Fine-tuning on Ray Train with MLflow tracking and the model registry."""
