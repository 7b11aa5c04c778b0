"""PromQL snippets the dashboards repeat, spelled once."""

RATE = "$__rate_interval"
MODELS = 'model_name=~"$model"'
"""Selector of the models picked in the `$model` variable."""


def rate(metric: str, by: str, selector: str = MODELS) -> str:
    """`sum by (by) (rate(metric{selector}[$__rate_interval]))`."""
    return f"sum by ({by}) (rate({metric}{{{selector}}}[{RATE}]))"


def quantile(q: float, histogram: str, by: str, selector: str = MODELS) -> str:
    """The q-quantile of a `_bucket` histogram, per `by`."""
    return f"histogram_quantile({q}, {rate(histogram + '_bucket', by + ', le', selector)})"


def mean(histogram: str, by: str, selector: str = MODELS) -> str:
    """Mean observed value of a histogram (sum / count), per `by`."""
    return f"{rate(histogram + '_sum', by, selector)} / {rate(histogram + '_count', by, selector)}"


def share(counter: str, by: str, of: str, selector: str = MODELS) -> str:
    """Each `by` group's share of its `of` group's rate."""
    return (
        f"{rate(counter, by, selector)} / ignoring({_extra(by, of)}) group_left "
        f"{rate(counter, of, selector)}"
    )


def _extra(by: str, of: str) -> str:
    kept = {label.strip() for label in of.split(",")}
    return ", ".join(label.strip() for label in by.split(",") if label.strip() not in kept)
