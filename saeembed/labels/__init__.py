"""What each latent means: the label store of an SAE (`store`), importers for published labels
(`importers`), the offline labeler scored on held-out documents (`offline`), the LLM labeler (`llm`),
and the words a label may not hold (`words`)."""

from saeembed.labels.importers import import_labels
from saeembed.labels.offline import KEEP_SCORE, offline_labels, score_summary
from saeembed.labels.store import LabelError, Labels, labels_for, labels_path, save_labels
from saeembed.labels.words import ROLE_MARKERS, STOPWORDS, strip_role_markers

__all__ = ["KEEP_SCORE", "LabelError", "Labels", "ROLE_MARKERS", "STOPWORDS", "import_labels", "labels_for",
           "labels_path", "offline_labels", "save_labels", "score_summary", "strip_role_markers"]
