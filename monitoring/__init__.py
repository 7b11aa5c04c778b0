"""ML monitoring (confidence, prediction distribution, data drift) and the stack as code."""
