"""The IR itself as a target (``export --target ir``): the integer graph file, verified in the golden
interpreter against the torch model it was exported from (target.py)."""
