"""The shapes shared by the service, the API and the client: pydantic only, no FastAPI, no database."""
