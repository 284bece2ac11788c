"""The show recommender: interactions, model, evaluation, persistence, training, scoring."""
