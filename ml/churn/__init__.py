"""The churn model: estimator, evaluation, training pipeline, batch scoring."""
