"""HTTP only: the one package that imports FastAPI. One router per OpenAI resource."""
