"""Use cases per OpenAI resource: rules and orchestration over the storage and engine Protocols."""
