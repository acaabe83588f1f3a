"""Host tools for ubroker (CPython): the `ubroker` command and the helpers behind it."""
