"""Drawing only: every function takes ``ax=None`` (or a figure) and returns what it drew on."""
