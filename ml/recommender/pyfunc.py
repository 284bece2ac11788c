"""MLflow "model from code" for the recommender: logged as this file, not as a pickle.

MLflow runs this file when it loads the model; `set_model` names the pyfunc, whose
``load_context`` reads the npz/JSON artifacts written by `ml.recommender.persistence.save`.
The class lives here, in a file of its own, so importing the recommender does not import
MLflow, and `ml.recommender.persistence.log_recommender` logs this file by its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from ml.recommender.model import ItemItemRecommender, predict_frame
from ml.recommender.persistence import ARTIFACT_KEY, load


class RecommenderPyfunc(PythonModel):
    """MLflow pyfunc wrapper of a saved `ItemItemRecommender` (artifact key ``recommender``).

    Input: a DataFrame with ``history`` (a list of show ids, most recent first, or a JSON
    string of one) and optionally ``just_watched`` (a show id or None). Params: ``k``
    (default 10). Output: a DataFrame with one row per recommendation: ``row`` (position of
    the input row), ``rank`` (1 = best), ``show_id``, ``score``.
    """

    def __init__(self) -> None:
        self.model: ItemItemRecommender | None = None

    def load_context(self, context: Any) -> None:
        """Load the recommender from the logged artifact folder."""
        self.model = load(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Return the top-k recommendations of every input row (see the class doc)."""
        if self.model is None:
            raise RuntimeError("the recommender is not loaded (load_context was not called)")
        return predict_frame(self.model, model_input, int((params or {}).get("k", 10)))


set_model(RecommenderPyfunc())
