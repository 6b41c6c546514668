"""The HTTP layer (ARCHITECTURE §6): thin FastAPI routers over the service (`app.service`). Its request
and response bodies live in `app.contracts.schemas` (FastAPI-free, shared with `app.client`)."""
