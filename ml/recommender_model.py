"""MLflow "model from code" for the recommender: logged as this file, not as a pickle.

MLflow runs this file when it loads the model; `set_model` names the pyfunc whose
``load_context`` reads the npz/JSON artifacts (see `ml.recommend.RecommenderPyfunc`).
"""

from mlflow.models import set_model

from ml.recommend import RecommenderPyfunc

set_model(RecommenderPyfunc())
