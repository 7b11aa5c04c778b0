"""Classification quality from per-class counts: accuracy, macro F1, per-class recall.

The definitions are scikit-learn's, so the numbers can be checked against it on the same pairs:
`accuracy_score`; `f1_score(average="macro")`, the mean of 2·TP / (2·TP + FP + FN) over the
classes that occur as a true or a predicted label; `recall_score(average=None)`, TP / (TP + FN)
for each class that occurs as a true label. A class that never occurs as a true label has no
recall here (scikit-learn reports 0 with a warning).
"""

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Counts = npt.NDArray[np.int64]


@dataclass(frozen=True)
class QualityReport:
    """Quality of one model version over its window (see `monitoring.feedback.window`)."""

    labels: tuple[str, ...]
    """The model's label set; `recall` and `f1` follow its order."""
    labelled: int
    """Labels that arrived in the window."""
    correct: int
    """Of those, how many equal the prediction."""
    recall: tuple[float, ...]
    """Per class: TP / (TP + FN); NaN for a class that is no true label in the window."""
    f1: tuple[float, ...]
    """Per class: 2·TP / (2·TP + FP + FN); NaN for a class neither true nor predicted."""
    predictions: int
    """Predictions made in the window."""
    answered: int
    """Of those, how many have received a label so far."""

    @classmethod
    def from_counts(
        cls,
        labels: tuple[str, ...],
        counts: Counts,
        *,
        predictions: int,
        answered: int,
    ) -> "QualityReport":
        """From counts[0] = true positives, counts[1] = true labels, counts[2] = predicted
        labels, per class."""
        true_positives, true_labels, predicted_labels = counts
        with np.errstate(divide="ignore", invalid="ignore"):
            recall = np.where(true_labels > 0, true_positives / true_labels, np.nan)
            both = true_labels + predicted_labels
            f1 = np.where(both > 0, 2 * true_positives / both, np.nan)
        return cls(
            labels=labels,
            labelled=int(true_labels.sum()),
            correct=int(true_positives.sum()),
            recall=tuple(recall.tolist()),
            f1=tuple(f1.tolist()),
            predictions=predictions,
            answered=answered,
        )

    @property
    def accuracy(self) -> float:
        """Correct / labelled; NaN without labels."""
        return self.correct / self.labelled if self.labelled else math.nan

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the classes that occur as a true or predicted label; NaN without labels."""
        present = [value for value in self.f1 if not math.isnan(value)]
        return sum(present) / len(present) if present else math.nan

    @property
    def labelled_share(self) -> float:
        """Share of the window's predictions that have received a label; NaN without any."""
        return self.answered / self.predictions if self.predictions else math.nan
