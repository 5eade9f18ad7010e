"""MLflow tracking of training jobs (docs/operations.md)."""
