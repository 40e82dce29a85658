"""A local web console: the model registry with metrics side by side, approve / reject, and a
recommendation explorer (``ecomrec console``)."""
